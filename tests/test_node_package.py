"""What the installed node package holds: product code only, no test harness."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "abaw_ros"
TEST_ONLY = {"pytest", "ros_harness", "fault_files", "hri_msgs_build", "robot_workload"}


def test_the_installed_package_holds_no_test_harness():
    """CMakeLists.txt installs all of abaw_ros/ and setup.py every abaw_ros.* package, so
    a test helper inside it would land in site-packages."""
    assert not (PACKAGE / "ros" / "testing.py").exists()
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in TEST_ONLY, f"{path.relative_to(PACKAGE.parent)} imports {name}"
