"""The package as its users meet it: the ROS-free core without rclpy, the colcon install
space with our sources merged into the generated Python package, the launch and config
files installed, and the timm import shim."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The colcon install space of the environment in use (setup_env.sh exports it: install/ for
# Kilted, install-jazzy/ for Jazzy).
INSTALL = Path(os.environ.get("ABAW_INSTALL_BASE", ROOT / "install")) / "abaw_ros"


def _run(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True,
                          capture_output=True, timeout=300, cwd=cwd)


def test_core_works_where_rclpy_cannot_be_imported(tmp_path):
    # A meta-path hook makes any rclpy / ROS message import fail, as on a machine without ROS.
    code = """
        import sys
        class NoRos:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {'rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'rosidl_runtime_py'}:
                    raise ImportError(f'{name} is not available (ROS blocked for this test)')
                return None
        sys.meta_path.insert(0, NoRos())
        try:
            import rclpy
            raise SystemExit('rclpy should not import here')
        except ImportError:
            pass
        import importlib, pkgutil
        import abaw_ros
        # ROS layers, plus the TensorRT modules (tensorrt_api, _build, _run, _backend), which
        # are imported only where TensorRT exists.
        skipped = {'abaw_ros.ros', 'abaw_ros.msg'}
        names = []
        for mod in pkgutil.walk_packages(abaw_ros.__path__, 'abaw_ros.'):
            if mod.name.startswith('abaw_ros.runtime.tensorrt_'):
                continue
            if any(mod.name == s or mod.name.startswith(s + '.') for s in skipped):
                continue
            importlib.import_module(mod.name)
            names.append(mod.name)
        assert 'abaw_ros.tasks' in names and 'abaw_ros.cli' in names, names
        from abaw_ros.tasks import output_slices, output_size
        assert output_size(['va', 'au', 'emi', 'ah']) == 21
        assert output_slices(['ah', 'va'])['ah'] == slice(2, 3)
        from abaw_ros.cli import main
        try:
            main(['--help'])
        except SystemExit as exc:
            assert exc.code == 0
        assert 'rclpy' not in sys.modules
        print('CORE-OK', len(names))
    """
    proc = _run(code, dict(os.environ), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CORE-OK" in proc.stdout


def test_install_space_merges_sources_with_generated_messages(tmp_path):
    site = next((INSTALL / "lib").glob("python3*/site-packages"))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(site)  # the install space alone, as on a robot
    code = f"""
        import abaw_ros, abaw_ros.tasks
        from abaw_ros.msg import FaceAffectArray
        assert abaw_ros.tasks.__file__.startswith({str(site)!r}), abaw_ros.tasks.__file__
        print('INSTALL-OK')
    """
    proc = _run(code, env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (INSTALL / "lib" / "abaw_ros" / "affect_node").exists()
    assert (INSTALL / "share" / "abaw_ros" / "launch" / "affect.launch.py").exists()
    assert (INSTALL / "share" / "abaw_ros" / "config" / "affect.yaml").exists()
    assert (INSTALL / "share" / "abaw_ros" / "msg" / "FaceAffect.msg").exists()


def test_timm_imports_and_builds_the_backbone():
    from abaw_ros._compat import import_timm

    timm = import_timm()
    import torch

    model = timm.create_model("mobilenetv4_conv_small", pretrained=False, features_only=True,
                              out_indices=(2, 3, 4))
    with torch.no_grad():
        shapes = [tuple(f.shape) for f in model(torch.zeros(1, 3, 224, 224))]
    assert shapes == [(1, 64, 28, 28), (1, 96, 14, 14), (1, 960, 7, 7)]


def test_package_xml_and_cmake_agree_on_dependencies():
    import xml.etree.ElementTree as ET

    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.findtext("name") == "abaw_ros"
    assert root.find("export/build_type").text == "ament_cmake"
    depends = {e.text for e in root.iter("depend")}
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for dep in depends:
        assert f"find_package({dep} REQUIRED)" in cmake, dep
    assert "rosidl_interface_packages" in {e.text for e in root.iter("member_of_group")}
    assert "ament_python_install_package" not in cmake.replace("ament_python_install_package(abaw_ros)", "")
