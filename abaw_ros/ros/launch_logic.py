"""What ``launch/affect.launch.py`` decides, as plain Python (no ``launch`` import), so
it is tested where the launch stack is not installed.

The launch file reads every argument as a string inside an ``OpaqueFunction`` and hands
them to :func:`plan_node`; nothing a user types is ever pasted into Python source
(``PythonExpression``) or parsed as YAML. :class:`NodeLaunch` says which executable to
start, in which namespace, with which parameters and remappings; the launch file turns it
into a ``launch_ros`` ``Node`` or ``LifecycleNode`` and passes every override with
``ParameterValue(value, value_type=str)``. Facts from the launch sources this relies on
(ros2/launch and ros2/launch_ros, humble, jazzy and rolling branches):

- ``IfCondition`` reads a boolean as ``text.strip().lower()`` in ``('true', '1')`` or
  ``('false', '0')`` and refuses anything else
  (``launch/conditions/evaluate_condition_expression_impl.py``); :func:`parse_bool` does
  the same, so ``managed:=1`` and ``managed:=True`` mean what they mean everywhere in ROS.
- A parameter value given as a string or substitution is parsed as YAML by launch_ros
  (``launch_ros/utilities/evaluate_parameters.py``), so ``/data/run #2/model.pt`` would
  arrive as ``/data/run`` and ``2025`` as an integer; ``ParameterValue(..., value_type=str)``
  keeps it a string (``launch_ros/parameter_descriptions.py``).
- A lifecycle node enters ``inactive`` after configure *and* after deactivate; autostart
  activates only on ``configuring -> inactive`` (:data:`ACTIVATE_AFTER`), so a deactivate
  from ``ros2 lifecycle set`` or a lifecycle manager stays in force.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from abaw_ros.ros.node_startup import EXIT_STARTUP_FAILED, NODE_NAME

# launch's own boolean words (evaluate_condition_expression_impl.py, VALID_TRUE_EXPRESSIONS
# and VALID_FALSE_EXPRESSIONS), compared after strip().lower().
TRUE_WORDS: tuple[str, ...] = ("true", "1")
FALSE_WORDS: tuple[str, ...] = ("false", "0")

# (start_state, goal_state) of the transition event after which autostart activates: the
# end of configure. Deactivate ends in the same goal state from 'deactivating'.
ACTIVATE_AFTER: tuple[str, str] = ("configuring", "inactive")

EXECUTABLES: dict[bool, str] = {False: "affect_node", True: "affect_lifecycle_node"}

# Launch arguments passed to the node as string parameters when not empty (empty keeps the
# parameters file's value).
STRING_PARAMETER_ARGUMENTS: tuple[str, ...] = ("model_file_path",)

# A ROS name token (rmw_validate_namespace / rcl_validate_topic_name): a letter or '_'
# first, then letters, digits and '_'.
_TOKEN = r"[A-Za-z_][A-Za-z0-9_]*"
_NAMESPACE = re.compile(rf"/?{_TOKEN}(/{_TOKEN})*")
_TOPIC = re.compile(rf"(~/|/)?{_TOKEN}(/{_TOKEN})*")


class LaunchArgumentError(ValueError):
    """A launch argument that cannot be used; the message names it and what would be right."""


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


def launch_arguments(default_params_file: str) -> tuple[LaunchArgument, ...]:
    """The arguments of affect.launch.py, in the order ``--show-args`` lists them."""
    return (
        LaunchArgument("image_topic", "image",
                       "camera topic (sensor_msgs/Image) the node subscribes to; the compressed "
                       "input follows as <image_topic>/compressed"),
        LaunchArgument("params_file", default_params_file,
                       "ROS 2 parameters file for the abaw_affect node"),
        LaunchArgument("model_file_path", "",
                       "checkpoint (.pt) or exported ONNX bundle, passed as a string; empty keeps "
                       "the parameters file's value"),
        LaunchArgument("namespace", "",
                       "namespace of the node (relative names go under any PushRosNamespace of "
                       "an including launch file); the parameters file's /**/abaw_affect "
                       "section applies in any namespace"),
        LaunchArgument("managed", "false",
                       "true|1: the managed (lifecycle) node affect_lifecycle_node; false|0: affect_node"),
        LaunchArgument("autostart", "true",
                       "with managed:=true, configure at start and activate once configured; "
                       "false: leave it to a lifecycle manager"),
    )


def parse_bool(name: str, text: str) -> bool:
    """A boolean launch argument read as launch's ``IfCondition`` reads it."""
    word = str(text).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise LaunchArgumentError(f"{name}:={text!r}: must be one of {list(TRUE_WORDS + FALSE_WORDS)} "
                              f"(case-insensitive, as launch's IfCondition reads booleans)")


@dataclass(frozen=True)
class NodeLaunch:
    """The node affect.launch.py starts."""

    executable: str
    managed: bool
    autostart: bool  # configure at start, activate after configure (managed only)
    namespace: str
    params_file: str
    # String parameters that override the file; the launch file wraps each in
    # ParameterValue(value, value_type=str).
    overrides: dict[str, str] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    name: str = NODE_NAME

    @property
    def parameters(self) -> list[str | dict[str, str]]:
        """``parameters=`` of the launch_ros action: the file, then the overrides."""
        return [self.params_file, dict(self.overrides)] if self.overrides else [self.params_file]


def plan_node(arguments: Mapping[str, str]) -> NodeLaunch:
    """The node for these launch arguments (all strings, as launch holds them)."""
    def arg(name: str) -> str:
        if name not in arguments:
            raise LaunchArgumentError(f"launch argument {name!r} is missing (declared: "
                                      f"{sorted(arguments)})")
        return str(arguments[name])

    managed = parse_bool("managed", arg("managed"))
    autostart = parse_bool("autostart", arg("autostart"))
    namespace = arg("namespace").strip()
    if namespace and not _NAMESPACE.fullmatch(namespace):
        raise LaunchArgumentError(
            f"namespace:={namespace!r}: not a ROS namespace (names of letters, digits and '_', "
            f"not starting with a digit, separated by '/', e.g. robot1 or /robot1/front)")
    image_topic = arg("image_topic").strip()
    if not _TOPIC.fullmatch(image_topic):
        raise LaunchArgumentError(
            f"image_topic:={image_topic!r}: not a ROS topic name (names of letters, digits and "
            f"'_', not starting with a digit, separated by '/', e.g. /camera/image_raw)")
    params_file = arg("params_file")
    if not params_file.strip():
        raise LaunchArgumentError("params_file:='': give a ROS 2 parameters file (the default is "
                                  "the installed config/affect.yaml)")
    # Values are kept exactly as typed (spaces, '#', quotes): they are file names.
    overrides = {name: arg(name) for name in STRING_PARAMETER_ARGUMENTS if arg(name) != ""}
    return NodeLaunch(
        executable=EXECUTABLES[managed],
        managed=managed,
        autostart=managed and autostart,
        namespace=namespace,
        params_file=params_file,
        overrides=overrides,
        remappings=(("image", image_topic), ("image/compressed", f"{image_topic}/compressed")),
    )


def activates_after(start_state: str, goal_state: str) -> bool:
    """Whether autostart activates the managed node after this transition event."""
    return (start_state, goal_state) == ACTIVATE_AFTER


def exit_message(returncode: int | None, launch_stopping: bool = False) -> str | None:
    """What launch says when the node's process ends on its own, or None for a clean stop:
    exit 0 (which the node also gives for Ctrl-C and SIGTERM) or any end while launch
    itself is stopping its processes (a second Ctrl-C, launch's SIGTERM/SIGKILL escalation).
    A message ends launch with an error, so a supervisor (systemd, docker) sees the
    failure: ``ros2 launch`` itself exits 0 whatever its processes' codes."""
    if returncode == 0 or launch_stopping:
        return None
    if returncode == EXIT_STARTUP_FAILED:
        return (f"{NODE_NAME} exited with code {returncode}: it could not start (its [FATAL] "
                f"line above names the parameter or model file)")
    if returncode is not None and returncode < 0:
        return f"{NODE_NAME} was killed by signal {-returncode}"
    return f"{NODE_NAME} exited with code {returncode}"
