"""abaw_ros: per-face affect estimation for ROS 2.

The core (``tasks``, ``config``, ``models``, ``data``, ``training``, ``metrics``,
``runtime``, ``perception``, ``offline``) never imports ROS. Everything that imports
``rclpy`` lives in :mod:`abaw_ros.ros`. The generated messages are ``abaw_ros.msg`` once
the package is built with colcon.
"""
from pkgutil import extend_path

# colcon installs the generated messages into an `abaw_ros` directory of its own install
# space; a source checkout that is first on sys.path must still see `abaw_ros.msg`.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
