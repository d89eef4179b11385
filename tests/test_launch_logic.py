"""affect.launch.py: its plain-Python decisions (abaw_ros.ros.launch_logic), the launch
file's wiring of them (launch and launch_ros are not on the package registry, so the file
is checked as source here; docs/NODE.md "Launch" has the runs with the real launch stack),
and the shipped parameters file read by rclpy in a namespace.

One test per launch bug fixed: activation after every transition into 'inactive' (undid a
deactivate), arguments spliced into Python (a quote broke launch, `managed:=1` read as
false), string parameters parsed as YAML ('#' cut the path, `2025` became an int), and a
parameters file keyed `abaw_affect:` (ignored in a namespace).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from abaw_ros.ros.launch_logic import (
    ACTIVATE_AFTER,
    EXECUTABLES,
    LaunchArgumentError,
    activates_after,
    exit_message,
    launch_arguments,
    parse_bool,
    plan_node,
)

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "affect.launch.py"
PACKAGE_YAML = ROOT / "config" / "affect.yaml"


def arguments(**given: str) -> dict[str, str]:
    """The launch arguments as launch holds them (strings), defaults filled in."""
    values = {a.name: a.default for a in launch_arguments(str(PACKAGE_YAML))}
    values.update(given)
    return values


# -- booleans as ROS reads them (main: `'1'.lower() == 'true'` started the plain node) ------
@pytest.mark.parametrize("text", ["true", "True", "TRUE", "1", " true "])
def test_managed_accepts_what_launch_ifcondition_reads_as_true(text):
    plan = plan_node(arguments(managed=text))
    assert plan.managed and plan.executable == EXECUTABLES[True] == "affect_lifecycle_node"
    assert plan.autostart


@pytest.mark.parametrize("text", ["false", "False", "0"])
def test_managed_false_starts_the_plain_node(text):
    plan = plan_node(arguments(managed=text))
    assert not plan.managed and plan.executable == "affect_node"
    assert not plan.autostart  # autostart only means something for the managed node


@pytest.mark.parametrize("name", ["managed", "autostart"])
@pytest.mark.parametrize("text", ["maybe", "yes", "", "2", "on"])
def test_a_bad_boolean_is_one_error_naming_the_value(name, text):
    with pytest.raises(LaunchArgumentError) as error:
        plan_node(arguments(**{name: text}))
    assert f"{name}:={text!r}" in str(error.value)
    assert "['true', '1', 'false', '0']" in str(error.value)


def test_autostart_false_leaves_the_managed_node_to_a_lifecycle_manager():
    assert parse_bool("autostart", "0") is False
    plan = plan_node(arguments(managed="1", autostart="False"))
    assert plan.managed and not plan.autostart


# -- strings stay strings (main: YAML made '/data/run #2/model.pt' '/data/run', 2025 an int) -
@pytest.mark.parametrize("path", [
    "/data/run #2/model.pt",
    "/data/o'brien/model.pt",
    '/data/"quoted"/model.pt',
    "2025",
    "true",
    "~/models/a: b.pt",
    "'); __import__('os').system('touch /tmp/pwned'); ('",
])
def test_model_file_path_is_passed_verbatim_as_a_string_parameter(path):
    import yaml

    plan = plan_node(arguments(model_file_path=path))
    assert plan.overrides == {"model_file_path": path}
    assert plan.parameters == [str(PACKAGE_YAML), {"model_file_path": path}]
    # What launch_ros does with a string parameter that is not typed (YAML rules) loses
    # or changes these; the launch file therefore wraps each override in
    # ParameterValue(value_type=str) (test_launch_file_wires_the_plan_into_launch_ros).
    if path in ("/data/run #2/model.pt", "2025", "true"):
        assert yaml.safe_load(path) != path


def test_an_empty_model_file_path_keeps_the_parameters_files_value():
    plan = plan_node(arguments())
    assert plan.overrides == {} and plan.parameters == [str(PACKAGE_YAML)]


def test_image_topic_remaps_both_inputs():
    plan = plan_node(arguments(image_topic="/camera/image_raw"))
    assert plan.remappings == (("image", "/camera/image_raw"),
                               ("image/compressed", "/camera/image_raw/compressed"))


@pytest.mark.parametrize(("name", "value"), [
    ("image_topic", "camera image"), ("image_topic", ""), ("image_topic", "/cam/1raw"),
    ("namespace", "robot 1"), ("namespace", "1robot"), ("namespace", "robot1/"), ("namespace", "a//b"),
    ("params_file", ""),
])
def test_a_bad_name_is_one_error_naming_the_value(name, value):
    with pytest.raises(LaunchArgumentError, match=f"{name}:="):
        plan_node(arguments(**{name: value}))


# -- the namespace argument ------------------------------------------------------------------
@pytest.mark.parametrize("namespace", ["", "robot1", "/robot1/front_camera", "_cam"])
def test_namespace_argument_goes_to_the_node(namespace):
    plan = plan_node(arguments(namespace=namespace))
    assert plan.namespace == namespace and plan.name == "abaw_affect"


# -- activation after configure only (main: after every transition into 'inactive') ----------
def test_autostart_activates_after_configure_but_not_after_deactivate():
    assert ACTIVATE_AFTER == ("configuring", "inactive")
    assert activates_after("configuring", "inactive")
    # Transition events that also end in 'inactive': a deactivate (ros2 lifecycle set,
    # a lifecycle manager) and a failed activate must stay where they are.
    assert not activates_after("deactivating", "inactive")
    assert not activates_after("activating", "inactive")
    assert not activates_after("unconfigured", "configuring")


# -- the node's end ---------------------------------------------------------------------------
def test_a_node_failure_ends_launch_with_a_message_and_a_clean_stop_does_not():
    assert exit_message(0) is None
    assert "exited with code 2" in exit_message(2) and "[FATAL]" in exit_message(2)
    assert exit_message(1) == "abaw_affect exited with code 1"
    assert exit_message(-9) == "abaw_affect was killed by signal 9"
    # While launch stops its processes (Ctrl-C, its SIGTERM/SIGKILL escalation), any end is expected.
    assert exit_message(-2, launch_stopping=True) is None
    assert exit_message(-9, launch_stopping=True) is None


# -- the launch file uses the plan (launch_ros is not installed here: checked as source) ------
def _launch_tree() -> ast.Module:
    source = LAUNCH_FILE.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(LAUNCH_FILE))
    compile(tree, str(LAUNCH_FILE), "exec")
    return tree


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    def called(call: ast.Call) -> str:
        return call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and called(n) == name]


def _keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {k.arg: k.value for k in call.keywords if k.arg}


def test_launch_file_evaluates_no_argument_as_python():
    tree = _launch_tree()
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
            {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert "PythonExpression" not in names and "eval" not in names
    # The arguments are read as strings by an OpaqueFunction and planned by launch_logic.
    imported = {alias.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module == "abaw_ros.ros.launch_logic" for alias in n.names}
    assert {"plan_node", "launch_arguments", "ACTIVATE_AFTER", "exit_message"} <= imported
    assert _calls(tree, "OpaqueFunction") and _calls(tree, "plan_node")
    declared = _calls(tree, "DeclareLaunchArgument")
    assert len(declared) == 1 and _keywords(declared[0]).keys() == {"default_value", "description"}


def test_launch_file_wires_the_plan_into_launch_ros():
    tree = _launch_tree()
    typed = _calls(tree, "ParameterValue")
    assert typed, "string overrides must go through ParameterValue"
    for call in typed:
        value_type = _keywords(call).get("value_type")
        assert isinstance(value_type, ast.Name) and value_type.id == "str"
    # Node and LifecycleNode get one set of options, which carries everything the plan says.
    options = next(c for c in _calls(tree, "dict") if "executable" in _keywords(c))
    assert {"package", "executable", "name", "namespace", "parameters", "remappings",
            "on_exit"} <= _keywords(options).keys()
    assert _calls(tree, "Node") and _calls(tree, "LifecycleNode")
    transitions = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("TRANSITION_")}
    assert transitions == {"TRANSITION_CONFIGURE", "TRANSITION_ACTIVATE"}


def test_launch_file_activates_only_on_the_transition_out_of_configuring():
    handlers = _calls(_launch_tree(), "OnStateTransition")
    assert handlers
    for handler in handlers:
        keywords = _keywords(handler)
        assert {"start_state", "goal_state", "target_lifecycle_node"} <= keywords.keys(), \
            "without start_state a deactivate (deactivating -> inactive) is undone at once"


def test_launch_file_arguments_are_launch_logics():
    tree = _launch_tree()
    share = _calls(tree, "get_package_share_directory")
    assert share and share[0].args[0].value == "abaw_ros"
    names = [a.name for a in launch_arguments("x")]
    assert names == ["image_topic", "params_file", "model_file_path", "namespace", "managed", "autostart"]
    docstring = ast.get_docstring(tree)
    for name in names:  # the file's usage text lists every argument
        assert f"\n  {name} " in docstring, name


# -- the shipped parameters file applies in any namespace (main: keyed `abaw_affect:`) --------
@pytest.mark.parametrize("namespace", ["/", "/robot1", "/robot1/front_camera"])
def test_shipped_parameters_file_reaches_the_node_in_any_namespace(namespace):
    """rclpy matches the file's node keys against the node's full name (node.cpp,
    Node::get_parameters: `/**` matches any namespace); a key `abaw_affect:` matches only
    `/abaw_affect` and the file would be ignored under `namespace:=robot1`."""
    rclpy = pytest.importorskip("rclpy", reason="ROS 2 Python packages are not installed (source .abaw_env)")
    from rclpy.node import Node

    from abaw_ros.config import PipelineConfig

    expected = PipelineConfig.from_yaml(PACKAGE_YAML)
    context = rclpy.Context()
    rclpy.init(context=context, args=[])
    try:
        node = Node("abaw_affect", namespace=namespace, context=context,
                    cli_args=["--ros-args", "--params-file", str(PACKAGE_YAML)],
                    automatically_declare_parameters_from_overrides=True)
        try:
            assert node.has_parameter("detection_interval"), f"file not applied to {node.get_fully_qualified_name()}"
            for name in ("detection_interval", "detector", "model_file_path", "max_image_pixels"):
                assert node.get_parameter(name).value == getattr(expected, name), name
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
