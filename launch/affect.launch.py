"""Start the affect node with its parameters file.

    ros2 launch abaw_ros affect.launch.py image_topic:=/camera/image_raw \
        model_file_path:=/path/to/model_bundle
    ros2 launch abaw_ros affect.launch.py managed:=true       # the lifecycle variant

Arguments:
  image_topic      camera topic the node's ``image`` input is remapped to (the compressed
                   input follows as ``<image_topic>/compressed``)
  params_file      ROS 2 parameters file (default: the installed config/affect.yaml)
  model_file_path  checkpoint (.pt) or exported ONNX bundle; overrides the file's value
                   when given (empty: keep the file's value)
  managed          true: start ``affect_lifecycle_node`` (a managed node, unconfigured until
                   a lifecycle manager or ``autostart`` brings it up) instead of ``affect_node``
  autostart        with managed:=true, configure and then activate it at once (default true);
                   false leaves it to a lifecycle manager (``ros2 lifecycle set``, nav2's)
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("abaw_ros"), "config", "affect.yaml")
    image_topic = LaunchConfiguration("image_topic")
    params_file = LaunchConfiguration("params_file")
    model_file_path = LaunchConfiguration("model_file_path")
    managed = LaunchConfiguration("managed")

    def when(model: bool, lifecycle: bool) -> IfCondition:
        return IfCondition(PythonExpression([
            "(" if model else "not (", "'", model_file_path, "' != '') and ",
            "" if lifecycle else "not ", "('", managed, "'.lower() == 'true')"]))

    remappings = [
        ("image", image_topic),
        ("image/compressed", [image_topic, "/compressed"]),
    ]
    # A parameter set to '' would override the file, so the override is only passed
    # when the argument is given.
    with_model = [params_file, {"model_file_path": model_file_path}]

    def affect_node(parameters: list, condition) -> Node:
        return Node(
            package="abaw_ros",
            executable="affect_node",
            name="abaw_affect",
            output="screen",
            emulate_tty=True,
            parameters=parameters,
            remappings=remappings,
            condition=condition,
        )

    def managed_node(parameters: list, condition) -> LifecycleNode:
        return LifecycleNode(
            package="abaw_ros",
            executable="affect_lifecycle_node",
            name="abaw_affect",
            namespace="",
            output="screen",
            emulate_tty=True,
            parameters=parameters,
            remappings=remappings,
            condition=condition,
        )

    managed_nodes = [managed_node(with_model, when(True, True)), managed_node([params_file], when(False, True))]
    autostart = IfCondition(PythonExpression(["('", managed, "'.lower() == 'true') and ('",
                                              LaunchConfiguration("autostart"), "'.lower() == 'true')"]))
    bring_up = []
    for node in managed_nodes:
        bring_up += [
            # configure now; once it is inactive (model loaded), activate
            EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                        transition_id=Transition.TRANSITION_CONFIGURE),
                      condition=autostart),
            RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, goal_state="inactive",
                entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                      transition_id=Transition.TRANSITION_ACTIVATE))]),
                condition=autostart),
        ]

    return LaunchDescription([
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="camera topic (sensor_msgs/Image) the node subscribes to"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ROS 2 parameters file for the abaw_affect node"),
        DeclareLaunchArgument("model_file_path", default_value="",
                              description="checkpoint (.pt) or exported ONNX bundle; empty keeps "
                                          "the parameters file's value"),
        DeclareLaunchArgument("managed", default_value="false",
                              description="true: the managed (lifecycle) node affect_lifecycle_node"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="with managed:=true, configure and activate it at start"),
        affect_node(with_model, when(True, False)),
        affect_node([params_file], when(False, False)),
        *managed_nodes,
        *bring_up,
    ])
