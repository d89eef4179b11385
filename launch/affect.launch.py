"""Start the affect node with its parameters file.

    ros2 launch abaw_ros affect.launch.py image_topic:=/camera/image_raw \
        model_file_path:=/path/to/model_bundle

Arguments:
  image_topic      camera topic the node's ``image`` input is remapped to (the compressed
                   input follows as ``<image_topic>/compressed``)
  params_file      ROS 2 parameters file (default: the installed config/affect.yaml)
  model_file_path  checkpoint (.pt) or exported ONNX bundle; overrides the file's value
                   when given (empty: keep the file's value)
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("abaw_ros"), "config", "affect.yaml")
    image_topic = LaunchConfiguration("image_topic")
    params_file = LaunchConfiguration("params_file")
    model_file_path = LaunchConfiguration("model_file_path")
    model_given = PythonExpression(["'", model_file_path, "' != ''"])

    remappings = [
        ("image", image_topic),
        ("image/compressed", [image_topic, "/compressed"]),
    ]

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

    return LaunchDescription([
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="camera topic (sensor_msgs/Image) the node subscribes to"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ROS 2 parameters file for the abaw_affect node"),
        DeclareLaunchArgument("model_file_path", default_value="",
                              description="checkpoint (.pt) or exported ONNX bundle; empty keeps "
                                          "the parameters file's value"),
        # A parameter set to '' would override the file, so the override is only passed
        # when the argument is given.
        affect_node([params_file, {"model_file_path": model_file_path}], IfCondition(model_given)),
        affect_node([params_file], UnlessCondition(model_given)),
    ])
