"""Start the affect node with its parameters file.

    ros2 launch abaw_ros affect.launch.py image_topic:=/camera/image_raw \
        model_file_path:=/path/to/model_bundle
    ros2 launch abaw_ros affect.launch.py managed:=true       # the lifecycle variant
    ros2 launch abaw_ros affect.launch.py namespace:=robot1   # /robot1/abaw_affect

Arguments (``ros2 launch abaw_ros affect.launch.py --show-args``):
  image_topic      camera topic the node's ``image`` input is remapped to (the compressed
                   input follows as ``<image_topic>/compressed``)
  params_file      ROS 2 parameters file (default: the installed config/affect.yaml)
  model_file_path  checkpoint (.pt) or exported ONNX bundle, passed to the node as a string
                   whatever it contains; overrides the file's value when not empty
  namespace        the node's namespace (default: none, or that of an including launch file)
  managed          true|1: start ``affect_lifecycle_node`` (a managed node) instead of
                   ``affect_node``; false|0 (default) the plain node
  autostart        with managed:=true, configure at start and activate once configured
                   (default true); false leaves both to a lifecycle manager

The arguments are read as plain strings in an ``OpaqueFunction`` and turned into the node
by ``abaw_ros.ros.launch_logic`` (tested without the launch stack); no argument is ever
evaluated as Python or parsed as YAML. When the node ends on its own with a non-zero code
(2: a bad parameter or model file, its [FATAL] line names it) launch stops and exits 1.
docs/NODE.md ("Launch") has the details, SIGTERM included.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from lifecycle_msgs.msg import Transition

from abaw_ros.ros.launch_logic import ACTIVATE_AFTER, exit_message, launch_arguments, plan_node

ARGUMENTS = launch_arguments(os.path.join(get_package_share_directory("abaw_ros"), "config", "affect.yaml"))


class NodeFailed(RuntimeError):
    """Raised from the node's on_exit: launch logs it in one line, shuts down and exits 1."""


def node_exited(context):
    message = exit_message(context.locals.event.returncode, launch_stopping=context.is_shutdown)
    if message is not None:
        raise NodeFailed(message)


def start_node(context):
    plan = plan_node({a.name: LaunchConfiguration(a.name).perform(context) for a in ARGUMENTS})
    parameters = [plan.params_file]
    if plan.overrides:  # value_type=str: launch_ros would otherwise parse them as YAML
        parameters.append({name: ParameterValue(value, value_type=str)
                           for name, value in plan.overrides.items()})
    options = dict(
        package="abaw_ros",
        executable=plan.executable,
        name=plan.name,
        namespace=plan.namespace,
        output="screen",
        emulate_tty=True,
        parameters=parameters,
        remappings=list(plan.remappings),
        on_exit=[OpaqueFunction(function=node_exited)],
    )
    if not plan.managed:
        return [Node(**options)]
    node = LifecycleNode(**options)
    if not plan.autostart:
        return [node]

    def change_state(transition_id: int) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=transition_id))

    start_state, goal_state = ACTIVATE_AFTER
    return [
        node,
        # Activate after configure only: a later deactivate also ends in 'inactive'.
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state=start_state, goal_state=goal_state,
            entities=[change_state(Transition.TRANSITION_ACTIVATE)])),
        change_state(Transition.TRANSITION_CONFIGURE),
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *(DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
          for a in ARGUMENTS),
        OpaqueFunction(function=start_node),
    ])
