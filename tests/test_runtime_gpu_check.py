"""scripts/gpu_check.sh outside an NVIDIA machine: it must say there is no GPU and stop with
its documented code (3) before making anything, and refuse bad usage with 2."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None or Path("/etc/nv_tegra_release").exists(),
                    reason="an NVIDIA GPU may be present here: gpu_check.sh would run for real")
def test_without_a_gpu_it_says_so_and_exits_3(tmp_path):
    out = tmp_path / "report"
    result = _run("--out", str(out), cwd=tmp_path)
    assert result.returncode == 3
    assert "no NVIDIA GPU here" in result.stdout and "nothing was run" in result.stdout
    assert not out.exists()  # no venvs, no downloads


@pytest.mark.parametrize("args", [["--trt", "9"], ["--budget", "ten"], ["--cuda", "cu11"], ["--frobnicate"]])
def test_bad_usage_exits_2_naming_the_value(tmp_path, args):
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == 2 and args[-1] in result.stderr
