"""The package's own files and names are found one way (abaw_ros.share), and an error's text
becomes one line one way (abaw_ros.errors): no tool keeps its own copy."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from abaw_ros import share
from abaw_ros.config import DEFAULT_NODE_NAME
from abaw_ros.errors import one_line, shown

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "abaw_ros"


def _colcon_prefix(root: Path, files: dict[str, str]) -> Path:
    """A prefix laid out as a colcon install of the package (ament resource index marker)."""
    marker = root / "share" / "ament_index" / "resource_index" / "packages" / share.PACKAGE
    marker.parent.mkdir(parents=True)
    marker.write_text("")
    for name, text in files.items():
        path = root / "share" / share.PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_share_file_is_found_in_the_source_tree_first(monkeypatch, tmp_path):
    prefix = _colcon_prefix(tmp_path / "install", {"config/affect.yaml": "installed"})
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    assert share.find_share_file("config/affect.yaml") == share.SOURCE_ROOT / "config" / "affect.yaml"


def test_share_file_comes_from_a_colcon_install_that_registers_the_package(monkeypatch, tmp_path):
    unregistered = tmp_path / "other"
    (unregistered / "share" / share.PACKAGE).mkdir(parents=True)
    (unregistered / "share" / share.PACKAGE / "only_here.txt").write_text("not ours")
    prefix = _colcon_prefix(tmp_path / "install", {"only_here.txt": "ours"})
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join([str(unregistered), str(prefix)]))
    assert share.ament_prefixes() == [prefix]
    found = share.find_share_file("only_here.txt")
    assert found == prefix / "share" / share.PACKAGE / "only_here.txt" and found.read_text() == "ours"
    assert share.find_share_file("nowhere.txt") is None


def test_installed_executable_is_taken_only_when_it_can_run(monkeypatch, tmp_path):
    prefix = _colcon_prefix(tmp_path / "install", {})
    exe = prefix / "lib" / share.PACKAGE / "affect_node"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    assert share.installed_executable("affect_node") is None
    exe.chmod(0o755)
    assert share.installed_executable("affect_node") == exe


def test_the_node_name_is_one_constant():
    from abaw_ros.ros import node_process  # no rclpy at import

    assert DEFAULT_NODE_NAME == node_process.NODE_NAME == share.NODE_NAME == "abaw_affect"


@pytest.mark.parametrize(("error", "limit", "expected"), [
    (ValueError("bad\n  value\tthere"), None, "bad value there"),
    (OSError(), None, "OSError"),
    ("", None, ""),
    ("x" * 20, 10, "xxxxxxx..."),
    ("short", 10, "short"),
])
def test_one_line_joins_whitespace_and_cuts_at_the_limit(error, limit, expected):
    assert one_line(error, limit) == expected


def test_shown_cuts_long_message_values_and_says_how_long():
    assert shown("bgr8") == "'bgr8'"
    assert shown("e" * 1000) == f"{'e' * 40!r}... (1000 chars)"


def _definitions(name: str) -> list[str]:
    found = []
    for path in PACKAGE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name == name:
                found.append(str(path.relative_to(PACKAGE_DIR)))
    return sorted(found)


def _calls(name: str) -> list[str]:
    found = []
    for path in PACKAGE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name:
                found.append(str(path.relative_to(PACKAGE_DIR)))
    return sorted(set(found))


def test_one_line_and_shown_are_defined_once():
    assert [*_definitions("one_line"), *_definitions("_one_line")] == ["errors.py"]
    assert [*_definitions("shown"), *_definitions("_shown_text")] == ["errors.py"]


def test_the_share_directory_is_looked_up_in_one_module():
    # ament_index lookups and hand-built <prefix>/share/abaw_ros paths live in share.py only.
    assert _calls("get_package_share_directory") == [] and _calls("get_package_prefix") == []
    spelled = sorted(str(p.relative_to(PACKAGE_DIR)) for p in PACKAGE_DIR.rglob("*.py")
                     if '"share"' in p.read_text(encoding="utf-8"))
    assert spelled == ["share.py"], spelled
