"""A ROS 2 ``hri_msgs`` package with the four ROS4HRI messages the node uses, built with
colcon, for the ROS4HRI tests (hri_msgs is not installable here).

The field definitions are those of ros4hri/hri_msgs, branch humble-devel (released for
Humble and Jazzy), commit 4e7c1765216e7a60638a1f90fc85392688785e9a: ``msg/IdsList.msg``,
``msg/Expression.msg``, ``msg/FacialActionUnits.msg``, ``msg/NormalizedRegionOfInterest2D.msg``
(names, types and order of the fields; the category and AU-code constants, which change
no field, are left out). DDS matches a type by its name and fields, so a node talking to
this package talks to the released one; checked by hand against the real package built
from its sources (docs/NODE.md).

The build goes to ``build/test_hri_msgs/<key>`` of the checkout (ignored by git), keyed
by the definitions, the Python and the ROS prefix it was built against, under a file lock,
so a test session reuses it and parallel sessions do not build it twice.
``ABAW_HRI_MSGS_PREFIX=<install prefix of hri_msgs>`` makes the tests use that build
instead (the real package).
"""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 300

MESSAGES = {
    "IdsList": "std_msgs/Header header\nstring[] ids\n",
    "Expression": ("std_msgs/Header header\nstring expression\nfloat32 valence\nfloat32 arousal\n"
                   "float32 confidence\n"),
    "FacialActionUnits": "std_msgs/Header header\nfloat32[99] intensity\nfloat32[99] confidence\n",
    "NormalizedRegionOfInterest2D": ("std_msgs/Header header\nfloat32 xmin\nfloat32 ymin\nfloat32 xmax\n"
                                     "float32 ymax\nfloat32 c\n"),
}

PACKAGE_XML = """<?xml version="1.0"?>
<package format="3">
  <name>hri_msgs</name>
  <version>2.0.0</version>
  <description>ROS4HRI messages (test build of the published field definitions)</description>
  <maintainer email="tests@example.com">abaw_ros tests</maintainer>
  <license>BSD</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>std_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
"""

CMAKE = """cmake_minimum_required(VERSION 3.8)
project(hri_msgs)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(std_msgs REQUIRED)
rosidl_generate_interfaces(${PROJECT_NAME}
%s
  DEPENDENCIES std_msgs)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
"""


class HriMsgsUnavailable(RuntimeError):
    """colcon cannot build the package here; the message says why."""


@dataclass(frozen=True)
class HriMsgsBuild:
    prefix: Path  # the package's install prefix (install/hri_msgs)

    @property
    def python_dir(self) -> Path:
        return next(self.prefix.glob("lib/python3*/site-packages"))

    @property
    def lib_dir(self) -> Path:
        return self.prefix / "lib"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default os.environ) with the package importable (for child processes)."""
        env = dict(os.environ if base is None else base)
        for name, value in (("PYTHONPATH", self.python_dir), ("LD_LIBRARY_PATH", self.lib_dir),
                            ("AMENT_PREFIX_PATH", self.prefix)):
            env[name] = os.pathsep.join([str(value), *filter(None, [env.get(name, "")])])
        return env

    def activate(self) -> None:
        """Make ``hri_msgs`` importable in this process: its Python package on sys.path,
        its libraries loaded by path (the dynamic loader read LD_LIBRARY_PATH when the
        process started) and LD_LIBRARY_PATH / AMENT_PREFIX_PATH extended for the
        type-support lookups rclpy does by name at run time."""
        os.environ.update({k: v for k, v in self.env().items()
                           if k in ("LD_LIBRARY_PATH", "AMENT_PREFIX_PATH")})
        if str(self.python_dir) not in sys.path:
            sys.path.insert(0, str(self.python_dir))
        pending = sorted(self.lib_dir.glob("libhri_msgs__*.so"))
        # Load in dependency order: retry the ones whose dependencies are not loaded yet.
        for _ in range(len(pending) + 1):
            failed = []
            for lib in pending:
                try:
                    ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
                except OSError:
                    failed.append(lib)
            if not failed:
                return
            pending = failed
        raise HriMsgsUnavailable(f"cannot load {[p.name for p in pending]} from {self.lib_dir}")


def _key() -> str:
    digest = hashlib.sha256()
    for text in (PACKAGE_XML, CMAKE, *sorted(f"{k}:{v}" for k, v in MESSAGES.items()), sys.version,
                 os.environ.get("AMENT_PREFIX_PATH", ""), sysconfig.get_paths()["include"]):
        digest.update(text.encode())
    return digest.hexdigest()[:16]


def build_hri_msgs() -> HriMsgsBuild:
    """The cached build, built now when there is none; raises HriMsgsUnavailable."""
    given = os.environ.get("ABAW_HRI_MSGS_PREFIX")
    if given:
        prefix = Path(given).expanduser()
        if not (prefix / "lib").is_dir():
            raise HriMsgsUnavailable(f"ABAW_HRI_MSGS_PREFIX={given!r}: no lib/ (give install/hri_msgs)")
        return HriMsgsBuild(prefix)
    colcon = shutil.which("colcon")
    if colcon is None:
        raise HriMsgsUnavailable("colcon is not installed (source .abaw_env)")
    root = ROOT / "build" / "test_hri_msgs"
    root.mkdir(parents=True, exist_ok=True)
    work = root / _key()
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        prefix = work / "install" / "hri_msgs"
        if (work / ".complete").is_file():
            return HriMsgsBuild(prefix)
        shutil.rmtree(work, ignore_errors=True)  # a build that did not finish
        package = work / "src" / "hri_msgs"
        (package / "msg").mkdir(parents=True)
        (package / "package.xml").write_text(PACKAGE_XML)
        (package / "CMakeLists.txt").write_text(CMAKE % "\n".join(f'  "msg/{n}.msg"' for n in MESSAGES))
        for name, text in MESSAGES.items():
            (package / "msg" / f"{name}.msg").write_text(text)
        cmd = [colcon, "build", "--base-paths", "src", "--build-base", "build", "--install-base", "install",
               "--event-handlers", "console_direct-",
               "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"]
        try:
            done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise HriMsgsUnavailable(f"colcon build of hri_msgs took over {BUILD_TIMEOUT_S} s") from None
        if done.returncode != 0:
            raise HriMsgsUnavailable(f"colcon build of hri_msgs failed (exit {done.returncode}):\n"
                                     f"{(done.stdout + done.stderr)[-3000:]}")
        (work / ".complete").write_text("ok\n")
        return HriMsgsBuild(prefix)
