"""The node's ROS parameters: one per :class:`PipelineConfig` field, declared from the
parameter spec (:mod:`abaw_ros.parameter_spec`), read back as a validated config, and
runtime changes checked against the spec's ``runtime`` flag."""
from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node

from abaw_ros.config import ConfigError, ParameterSpec, PipelineConfig

# Parameters every rclpy node has, or that the ROS tooling adds; not ours to validate.
ROS_PARAMETERS = ("use_sim_time", "start_type_description_service")


def _ros_type(py_type: type) -> int:
    return {
        bool: ParameterType.PARAMETER_BOOL,
        int: ParameterType.PARAMETER_INTEGER,
        float: ParameterType.PARAMETER_DOUBLE,
        str: ParameterType.PARAMETER_STRING,
    }[py_type]


def _constraints(spec: ParameterSpec) -> str:
    """What ``ros2 param describe`` shows under "Constraints"; the ranges are checked by
    PipelineConfig (not by rclpy's integer/floating_point_range, whose refusal would not
    name the allowed values the same way, and which cannot say "0 or 32 to 1024")."""
    if spec.choices:
        return f"one of {list(spec.choices)}"
    return spec.bounds.describe() if spec.bounds is not None else ""


def declare_parameters(node: Node) -> None:
    """Every config field as a ROS parameter, with its description, range and whether a
    running node applies a change."""
    for spec in PipelineConfig.parameters():
        description = spec.description
        if spec.choices:
            description += f" One of: {', '.join(spec.choices)}."
        if spec.bounds is not None:
            description += f" Range: {spec.bounds.describe()}."
        description += (" Applied at run time." if spec.runtime
                        else " Read when the model loads (restart the node to change it).")
        # dynamic_typing: a value of the wrong type must reach PipelineConfig, whose
        # error names the parameter, instead of failing inside rclpy.
        descriptor = ParameterDescriptor(
            name=spec.name,
            type=_ros_type(spec.type),
            description=description,
            additional_constraints=_constraints(spec),
            dynamic_typing=True,
        )
        node.declare_parameter(spec.name, spec.default, descriptor)


def read_config(node: Node) -> PipelineConfig:
    """The parameters as a validated :class:`PipelineConfig`; raises ConfigError."""
    declared = {spec.name for spec in PipelineConfig.parameters()}
    # rclpy ignores values from --params-file / -p that no declaration asks for, so a
    # misspelt name would silently keep the default; its overrides are only kept here.
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    unknown = sorted(
        name for name in overrides
        if name not in declared and name not in ROS_PARAMETERS and not name.startswith("qos_overrides.")
    )
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {unknown} for node {node.get_name()!r}: known parameters "
            f"are {sorted(declared)}"
        )
    values = {name: node.get_parameter(name).value for name in declared}
    return PipelineConfig.from_dict(values).validate()


def runtime_change(config: PipelineConfig, values: dict[str, Any]) -> tuple[PipelineConfig, dict[str, Any]]:
    """The config with ``values`` (name -> value, ours only) applied, and what changed.
    Raises ConfigError with the reason when a value is refused: a parameter read when the
    model loads, or a value the config does not accept."""
    runtime = PipelineConfig.runtime_parameters()
    fixed = sorted(name for name, value in values.items()
                   if name not in runtime and value != getattr(config, name))
    if fixed:
        raise ConfigError(
            f"{', '.join(fixed)} cannot change while the node runs (read when the model loads); "
            f"restart the node with the new value, or for affect_lifecycle_node: deactivate, "
            f"cleanup, set it, configure, activate. At run time these apply: "
            f"{', '.join(sorted(runtime))}")
    new = PipelineConfig.from_dict({**config.to_dict(), **values}).validate(check_files=False)
    return new, {name: value for name, value in values.items() if value != getattr(config, name)}
