"""Many bags at once: a folder of 3 bags evaluated by 2 worker processes, and on a local
Ray instance the test starts, gives exactly what 3 single runs give (affect bags and
per-bag metrics), plus metrics pooled over the frames of all bags that equal the official
metrics recomputed here from the written bags and the label files."""
from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from abaw_ros import cli, metrics
from abaw_ros.config import PipelineConfig
from abaw_ros.offline.annotations import load_stamp_csv
from abaw_ros.offline.bag_discovery import find_bags
from abaw_ros.offline.bag_eval import BagEvalOptions, evaluate_bag
from abaw_ros.offline.bag_reader import read_affect_bag
from abaw_ros.offline.bag_writers import ImageBagWriter

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = (7, 9, 8)
START_NS = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> Path:
    """A folder with 3 bags of the astronaut at different places, each with a stamp-keyed
    label CSV next to it (VA and AU), and one earlier output that a scan must skip."""
    from skimage import data

    folder = tmp_path_factory.mktemp("bags")
    person = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (240, 240))
    rng = np.random.default_rng(11)
    for k, length in enumerate(LENGTHS):
        stamps = [START_NS + k * 10**10 + i * 40_000_000 for i in range(length)]
        with ImageBagWriter(folder / f"session{k}", "/camera/image_raw", "mcap" if k != 1 else "sqlite3") as writer:
            for i, stamp in enumerate(stamps):
                frame = np.full((300, 400, 3), 100 + 20 * k, np.uint8)
                x = 20 + 30 * k + 6 * i
                frame[30:270, x:x + 240] = person
                writer.write(frame, stamp)
        va = rng.uniform(-0.8, 0.8, (length, 2))
        au = (rng.random((length, 12)) > 0.5).astype(int)
        header = "stamp_ns,valence,arousal," + ",".join(f"AU{n}" for n in (1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26))
        rows = [f"{s},{v:.3f},{a:.3f}," + ",".join(map(str, r)) for s, (v, a), r in zip(stamps, va, au, strict=True)]
        (folder / f"session{k}_labels.csv").write_text("\n".join([header, *rows]) + "\n")
    (folder / "old_affect").mkdir()  # looks like an earlier bag-eval output
    (folder / "old_affect" / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    return folder


@pytest.fixture(scope="module")
def config(model_bundle) -> PipelineConfig:
    base = PipelineConfig.from_yaml(ROOT / "config" / "affect.yaml")
    return dataclasses.replace(base, model_file_path=str(model_bundle), backend="onnxruntime", warmup=False,
                               num_threads=1)


@pytest.fixture(scope="module")
def single_runs(bags, config, tmp_path_factory) -> dict[str, dict]:
    """Each bag on its own, the way `abaw-affect bag-eval BAG` runs it."""
    out = tmp_path_factory.mktemp("single")
    runs = {}
    for bag in find_bags([bags]):
        labels = load_stamp_csv(bags / f"{bag.name}_labels.csv")
        result = evaluate_bag(BagEvalOptions(bag, out / f"{bag.name}_affect", labels=labels, write_plot=False,
                                             progress=False), config)
        runs[bag.name] = {"metrics": result.metrics, "messages": read_affect_bag(result.output)}
    return runs


def cli_args(model_bundle) -> list[str]:
    return ["--model-file-path", str(model_bundle), "-p", "backend:=onnxruntime", "-p", "warmup:=false",
            "-p", "num_threads:=1", "--no-plot", "--no-progress"]


def message_values(messages) -> list:
    return [(m.log_time_ns, m.stamp_ns, [(f.face_id, f.roi.x_offset, f.roi.y_offset, f.roi.width, f.roi.height,
                                           f.frames_observed, f.valence, f.arousal, list(f.au_probability),
                                           list(f.mimicry_intensity), f.hesitancy_probability)
                                          for f in m.msg.faces]) for m in messages]


def recomputed_pooled(bags: Path, single_runs: dict) -> dict[str, float]:
    """VA CCC and AU F1 over all bags' frames (largest face, frames with a face), from the
    written messages and the CSVs parsed here."""
    pred = {"va": [], "au": []}
    true = {"va": [], "au": []}
    for name, run in sorted(single_runs.items()):
        lines = (bags / f"{name}_labels.csv").read_text().split()[1:]
        by_stamp = {int(r.split(",")[0]): [float(x) for x in r.split(",")[1:]] for r in lines}
        for m in run["messages"]:
            if not m.msg.faces:
                continue
            face = max(m.msg.faces, key=lambda f: (f.roi.width * f.roi.height, f.detection_confidence))
            label = by_stamp[m.stamp_ns]
            pred["va"].append([face.valence, face.arousal])
            true["va"].append(label[:2])
            pred["au"].append(list(face.au_probability))
            true["au"].append(label[2:])
    return {"va": metrics.task_metrics("va", np.array(pred["va"]), np.array(true["va"]))["va_ccc_mean"],
            "au": metrics.task_metrics("au", np.array(pred["au"]), np.array(true["au"]))["au_f1_mean"]}


def check_against_single_runs(out: Path, bags: Path, single_runs: dict) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    assert [Path(b["bag"]).name for b in summary["bags"]] == ["session0", "session1", "session2"]
    assert summary["bags_done"] == 3 and summary["bags_failed"] == 0
    for entry in summary["bags"]:
        name = Path(entry["bag"]).name
        single = single_runs[name]
        assert message_values(read_affect_bag(out / f"{name}_affect")) == message_values(single["messages"])
        assert entry["labels_csv"] == str(bags / f"{name}_labels.csv")
        for task in ("va", "au"):
            assert entry["metrics"][task]["scores"] == pytest.approx(single["metrics"][task]["scores"])
        assert entry["run"]["frames_processed"] == LENGTHS[int(name[-1])]
    pooled = recomputed_pooled(bags, single_runs)
    assert summary["pooled"]["va"]["scores"]["va_ccc_mean"] == pytest.approx(pooled["va"], abs=1e-6)
    assert summary["pooled"]["au"]["scores"]["au_f1_mean"] == pytest.approx(pooled["au"], abs=1e-6)
    assert summary["pooled"]["va"]["bags"] == 3
    assert summary["frames_processed"] == sum(LENGTHS)
    return summary


def test_two_workers_over_three_bags_equal_three_single_runs(tmp_path, bags, single_runs, model_bundle):
    out = tmp_path / "results"
    assert cli.main(["bag-eval", str(bags), "-o", str(out), "--workers", "2", *cli_args(model_bundle)]) == 0
    summary = check_against_single_runs(out, bags, single_runs)
    assert summary["executor"] == {"kind": "processes", "workers": 2}
    assert len({b["worker"] for b in summary["bags"]}) == 2  # really two processes
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["summary.json"] + [f"session{k}_affect{s}" for k in range(3) for s in ("", "_report.json")])
    meta = (out / "session0_affect" / "metadata.yaml").read_text()
    assert "version: 8" in meta


def test_a_bad_bag_among_many_is_one_line_and_the_others_are_done(tmp_path, bags, model_bundle, caplog):
    caplog.set_level(logging.ERROR)
    broken = tmp_path / "broken.mcap"
    broken.write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 20)
    out = tmp_path / "results"
    code = cli.main(["bag-eval", str(bags / "session0"), str(broken), "-o", str(out), *cli_args(model_bundle)])
    assert code == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bags_done"] == 1 and summary["bags_failed"] == 1
    assert "broken.mcap" in summary["bags"][1]["error"]
    assert [r for r in caplog.records if "broken.mcap" in r.getMessage()]
    caplog.clear()
    assert cli.main(["bag-eval", str(bags / "session0"), str(bags / "session1"), "--va", "x.txt",
                     *cli_args(model_bundle)]) == 2
    assert len(caplog.records) == 1 and "--va labels one bag" in caplog.records[0].getMessage()


def test_a_damaged_or_strict_stopped_bag_carries_its_exit_code_into_the_batch(tmp_path, bags, model_bundle,
                                                                             caplog):
    """A bag with bytes flipped on disk inside an MCAP chunk exits 4 on its own; among
    intact bags (2 worker processes) the batch exits 4 too, and summary.json says which bag
    is damaged. A bag that --strict stops (exit 2 alone) outranks it."""
    from test_bag_eval_outputs import write_bag
    from test_bag_io import flip_bytes_in_mcap_chunk, mcap_chunk_offsets

    damaged = tmp_path / "damaged"
    write_bag(damaged, 8, size=(640, 480))  # two frames per 1 MiB MCAP chunk
    assert len(mcap_chunk_offsets(damaged / "damaged.mcap")) == 4
    flip_bytes_in_mcap_chunk(damaged / "damaged.mcap", which=2)
    caplog.set_level(logging.ERROR)
    out = tmp_path / "results"
    code = cli.main(["bag-eval", str(bags / "session0"), str(damaged), "-o", str(out), "--workers", "2",
                     *cli_args(model_bundle)])
    assert code == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == 4
    assert [(b["status"], b["exit_code"]) for b in summary["bags"]] == [("done", 0), ("damaged", 4)]
    assert summary["bags_done"] == 1 and summary["bags_failed"] == 0
    assert summary["bags_by_status"] == {"done": 1, "damaged": 1}
    assert "2 of 8 frames could not be read" in summary["bags"][1]["problem"]
    assert summary["bags"][1]["run"]["frames_processed"] == 6
    lines = [r.getMessage() for r in caplog.records if r.name == "abaw_ros.offline.batch"]
    assert len(lines) == 1 and "damaged: bag is damaged: 2 of 8 frames" in lines[0], lines

    depth = tmp_path / "depth"
    write_bag(depth, 6, depth_at=(3,))  # one 16UC1 frame: --strict stops there
    caplog.clear()
    out = tmp_path / "strict"
    code = cli.main(["bag-eval", str(depth), str(damaged), str(bags / "session0"), "-o", str(out), "--strict",
                     *cli_args(model_bundle)])
    assert code == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == 2
    assert [(b["status"], b["exit_code"]) for b in summary["bags"]] == [("stopped", 2), ("damaged", 4), ("done", 0)]
    assert "16UC1" in summary["bags"][0]["problem"] and summary["bags"][0]["run"]["frames_processed"] == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "abaw_ros.offline.batch"]
    assert len(lines) == 2 and "stopped at the first undecodable frame (--strict)" in lines[0], lines


@pytest.mark.parametrize(("codes", "expected"), [
    ((0, 0), 0), ((0, 3), 3), ((3, 4, 0), 4), ((4, 2, 3), 2), ((), 0)])
def test_the_batch_exits_with_the_worst_bag_code(codes, expected):
    from abaw_ros.offline.batch_executors import BagOutcome
    from abaw_ros.offline.batch_summary import BatchResult

    outcomes = [BagOutcome(i, Path(f"b{i}"), None, exit_code=code) for i, code in enumerate(codes)]
    assert BatchResult(outcomes).exit_code == expected


@pytest.fixture
def ray_head(monkeypatch):
    """A local Ray instance of its own (2 CPUs), started in a child process; its address.
    Ray (>= 2.59) authenticates clients of local clusters with a token: the test makes one
    and gives it to the head and to this process (RAY_AUTH_MODE / RAY_AUTH_TOKEN)."""
    # Before Ray is imported: it reads them when it loads.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]')")
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    code = ("import ray, sys\n"
            f"ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 2**20, _temp_dir={temp_dir!r})\n"
            "print(ray.get_runtime_context().gcs_address, flush=True)\n"
            "sys.stdin.read()\n")
    head = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        address = head.stdout.readline().strip()
        assert address, "the Ray head did not start"
        yield address
    finally:
        head.stdin.close()  # the child shuts its Ray instance down and exits
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_executor_on_a_local_instance_equals_single_runs(tmp_path, bags, single_runs, model_bundle, ray_head):
    out = tmp_path / "results"
    assert cli.main(["bag-eval", str(bags), "-o", str(out), "--ray", ray_head, *cli_args(model_bundle)]) == 0
    summary = check_against_single_runs(out, bags, single_runs)
    assert summary["executor"] == {"kind": "ray", "address": ray_head}
