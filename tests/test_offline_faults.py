"""Fault injection into the offline tools, driven from outside as a user drives them
(``python -m abaw_ros.cli`` in a subprocess): what a user sees and what is kept when an
output is an input, two outputs share a path, an output belongs to someone else, two runs
write one output, a run was killed with SIGKILL, the disk is full (a small tmpfs) or the
output location is read-only (a read-only bind mount).

Every refusal and every operating-system fault ends in one error line naming the path and
the cause, exit code 2, no traceback; nothing of the user's is touched and no staging
folder (``.NAME.abaw-writing``) is left behind."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from abaw_ros.outputs import OWNER_FILE, OWNER_FORMAT, STAGING_SUFFIX

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


# -- helpers ----------------------------------------------------------------------------------
def cli(*args: object, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "abaw_ros.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def one_error(run: subprocess.CompletedProcess, *texts: str) -> str:
    """The run ended with exit 2 and exactly one error line holding every one of ``texts``."""
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if " ERROR " in line or line.startswith("abaw-affect ")]
    assert run.returncode == 2, (run.returncode, run.stderr[-3000:])
    assert len(lines) == 1, lines
    for text in texts:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def digest(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def staging_left(folder: Path) -> list[str]:
    """Hidden files and folders a tool left in ``folder`` (staging, temporary names)."""
    found = [p.relative_to(folder).parts for p in folder.rglob(".*")]
    return sorted(parts[-1] for parts in found if not any(part.startswith(".") for part in parts[:-1]))


def write_video(path: Path, frames: int, size: tuple[int, int] = (64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def model_args(bundle: Path) -> list[str]:
    return ["--model-file-path", str(bundle), "-p", "backend:=onnxruntime", "-p", "warmup:=false", "--no-progress"]


def _mount(args: list[str]) -> str | None:
    """None when the mount worked, else why not (not root, no mount namespace rights)."""
    try:
        run = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if run.returncode == 0 else (run.stderr.strip() or f"mount exit {run.returncode}")


@pytest.fixture
def small_disk(tmp_path):
    """A factory of small tmpfs mounts (a full disk on demand); skipped where this test
    cannot mount one (not root, a container without CAP_SYS_ADMIN)."""
    mounted: list[Path] = []

    def make(name: str, size: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        why = _mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)])
        if why is not None:
            pytest.skip(f"cannot mount a tmpfs here to fill a disk: {why}")
        mounted.append(point)
        return point

    yield make
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder (with one file of the user's) seen through a read-only bind mount; skipped
    where this test cannot bind-mount."""
    source = tmp_path / "ro_source"
    source.mkdir()
    (source / "mine.txt").write_text("the user's\n")
    point = tmp_path / "ro"
    point.mkdir()
    why = _mount(["--bind", "-o", "ro", str(source), str(point)])
    if why is not None:
        pytest.skip(f"cannot bind-mount a read-only folder here: {why}")
    yield point
    subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


def fill(disk: Path, leave_bytes: int) -> Path:
    """Fill the tmpfs ``disk`` until about ``leave_bytes`` are free (the user's file)."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    filler = disk / "users_file.bin"
    filler.write_bytes(b"u" * max(free - leave_bytes, 0))
    return filler


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("clip") / "clip.avi", 6)


# -- an output is never an input, and never two outputs on one path ---------------------------
def test_import_reference_never_writes_over_its_input_or_a_file_of_the_user(tmp_path):
    ckpt = tmp_path / "ref.ckpt"
    ckpt.write_bytes(b"PK\x03\x04 the user's Lightning checkpoint")
    thesis = tmp_path / "thesis.tex"
    thesis.write_text("\\chapter{Results}\n")
    before = {**digest(ckpt), **digest(thesis)}
    one_error(cli("import-reference", ckpt, "-o", ckpt), "is the input")
    one_error(cli("import-reference", ckpt, "-o", thesis, "--overwrite"), "thesis.tex", "not written by")
    assert {**digest(ckpt), **digest(thesis)} == before
    assert staging_left(tmp_path) == []


def test_predict_refuses_an_output_onto_its_source_or_onto_another_output(tmp_path, clip, model_bundle):
    source = tmp_path / "clip.avi"
    source.write_bytes(clip.read_bytes())
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in (1, 10):
        cv2.imwrite(str(imgs / f"{i}.png"), np.full((48, 64, 3), 40 * i % 255, np.uint8))
    before = {**digest(source), **digest(imgs)}
    one_error(cli("predict", source, "-o", tmp_path / "same.avi", "--video", tmp_path / "same.avi",
                  *model_args(model_bundle)), "would both be written to", "same.avi")
    one_error(cli("predict", imgs, "-o", imgs / "10.png", "--overwrite", *model_args(model_bundle)),
              "is inside the input", "10.png")
    assert {**digest(source), **digest(imgs)} == before
    assert not (tmp_path / "same.avi").exists() and staging_left(tmp_path) == []


def test_video_to_bag_never_writes_its_labels_over_an_annotation_file_or_an_earlier_csv(tmp_path, clip):
    va = tmp_path / "clip.va.txt"
    va.write_text("valence,arousal\n" + "0.1,0.2\n" * 6)
    before = digest(va)
    one_error(cli("video-to-bag", clip, tmp_path / "bag", "--va", va, "--labels-csv", va, "--no-progress"),
              "clip.va.txt", "is the input")
    assert digest(va) == before and not (tmp_path / "bag").exists()
    earlier = tmp_path / "bag_labels.csv"
    earlier.write_text("stamp_ns,valence,arousal\n1,0.5,0.5\n")
    kept = digest(earlier)
    one_error(cli("video-to-bag", clip, tmp_path / "bag", "--va", va, "--no-progress"), "bag_labels.csv",
              "exists already", "--overwrite")
    assert digest(earlier) == kept and not (tmp_path / "bag").exists() and staging_left(tmp_path) == []


def test_export_writes_a_bundle_whole_and_replaces_only_its_own(tmp_path, untrained_checkpoint):
    users = tmp_path / "existing_bundle"
    users.mkdir()
    (users / "encoder.onnx").write_bytes(b"the user's own graph")
    a_file = tmp_path / "notes.onnx"
    a_file.write_text("a file")
    before = {**digest(users), **digest(a_file)}
    for overwrite in ([], ["--overwrite"]):
        one_error(cli("export", untrained_checkpoint, "-o", users, "--no-verify", *overwrite), "existing_bundle",
                  "not written by export")
        one_error(cli("export", untrained_checkpoint, "-o", a_file, "--no-verify", *overwrite), "notes.onnx",
                  "is a regular file")
    assert {**digest(users), **digest(a_file)} == before

    ours = tmp_path / "bundle"
    run = cli("export", untrained_checkpoint, "-o", ours, "--no-verify", "--graphs", "encoder", "temporal_head")
    assert run.returncode == 0, run.stderr[-2000:]
    manifest = json.loads((ours / "bundle.json").read_text())
    assert sorted(p.name for p in ours.iterdir()) == ["bundle.json", "encoder.onnx", "temporal_head.onnx"]
    one_error(cli("export", untrained_checkpoint, "-o", ours, "--no-verify", "--graphs", "encoder"),
              "exists already", "--overwrite")
    run = cli("export", untrained_checkpoint, "-o", ours, "--no-verify", "--graphs", "encoder", "--overwrite")
    assert run.returncode == 0, run.stderr[-2000:]
    # written as a whole: the earlier temporal head does not stay beside the new encoder
    assert sorted(p.name for p in ours.iterdir()) == ["bundle.json", "encoder.onnx"]
    assert json.loads((ours / "bundle.json").read_text())["model_hash"] == manifest["model_hash"]
    assert staging_left(tmp_path) == []


def test_a_bundle_whose_graphs_come_from_two_models_is_refused_at_load(tmp_path, model_bundle, clip):
    import shutil

    import torch

    from abaw_ros.models import ModelConfig, create_affect_net, export_onnx

    torch.manual_seed(1)  # same shapes as model_bundle's model, other weights
    other = tmp_path / "other"
    export_onnx(create_affect_net(ModelConfig(window_length=8, n_levels=3)).eval(), other,
                graphs=("temporal_head",))
    mixed = tmp_path / "mixed"
    shutil.copytree(model_bundle, mixed)
    shutil.copyfile(other / "temporal_head.onnx", mixed / "temporal_head.onnx")
    one_error(cli("predict", clip, "-o", tmp_path / "out.csv", *model_args(mixed)), "temporal_head.onnx",
              "comes from another model")
    assert not (tmp_path / "out.csv").exists()


def test_train_never_replaces_an_earlier_run_without_resume_or_overwrite(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("train_config.json", "best.pt", "last.pt", "metrics.json"):
        (run_dir / name).write_text(f"epoch 12 {name}\n")
    before = digest(run_dir)
    line = one_error(cli("train", "--config", ROOT / "config" / "train_au_l3.yaml", "--out-dir", run_dir),
                     "holds an earlier run", "--resume", "--overwrite", "--out-dir")
    assert str(run_dir / "last.pt") in line
    (run_dir / "thesis.tex").write_text("mine\n")
    one_error(cli("train", "--config", ROOT / "config" / "train_au_l3.yaml", "--out-dir", run_dir, "--overwrite"),
              "not a training run's", "thesis.tex")
    assert digest(run_dir) == {**before, **digest(run_dir / "thesis.tex")}


def test_train_overwrite_takes_a_tracked_run_as_ours(tmp_path):
    """A run writes steps.csv and epochs.csv beside its checkpoints: --overwrite may replace
    such a run (and still refuses a folder with a user's file, above)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("train_config.json", "best.pt", "last.pt", "metrics.json", "steps.csv", "epochs.csv"):
        (run_dir / name).write_text(f"epoch 12 {name}\n")
    one_error(cli("train", "--config", ROOT / "config" / "train_au_l3.yaml", "--out-dir", run_dir),
              "holds an earlier run", "steps.csv")
    run = cli("train", "--config", ROOT / "config" / "train_au_l3.yaml", "--out-dir", run_dir, "--overwrite")
    assert "not a training run's" not in run.stderr, run.stderr


# -- two runs onto one output; the leftovers of a killed run ------------------------------------
def _fake_staging(target: Path, pid: int) -> Path:
    """The staging folder a run of ``pid`` on this host holds for ``target``."""
    holder = target.parent / f".{target.name}{STAGING_SUFFIX}"
    holder.mkdir()
    start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19] if Path(f"/proc/{pid}").exists() \
        else None
    (holder / OWNER_FILE).write_text(json.dumps({"format": OWNER_FORMAT, "host": socket.gethostname(), "pid": pid,
                                                 "start": start, "since": time.time()}))
    (holder / target.name).write_text("half written\n")
    return holder


def test_a_second_run_onto_an_output_being_written_is_refused_and_a_dead_runs_staging_removed(
        tmp_path, clip, model_bundle):
    out = tmp_path / "out.csv"
    other_run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        holder = _fake_staging(out, other_run.pid)
        one_error(cli("predict", clip, "-o", out, *model_args(model_bundle)), "being written by another run",
                  f"pid {other_run.pid}")
        assert (holder / "out.csv").read_text() == "half written\n" and not out.exists()
    finally:
        other_run.kill()
        other_run.wait()
    # that run is gone now (as after kill -9): its staging is recognised and removed
    run = cli("predict", clip, "-o", out, *model_args(model_bundle))
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.is_file() and staging_left(tmp_path) == []


def test_bag_eval_killed_with_sigkill_leaves_staging_that_the_next_run_removes(tmp_path, model_bundle):
    from test_bag_eval_outputs import write_bag

    bag = tmp_path / "rec"
    write_bag(bag, 600)
    command = [sys.executable, "-m", "abaw_ros.cli", "bag-eval", str(bag), "--no-plot", *model_args(model_bundle)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 180  # until the affect bag is being written
    while not list(tmp_path.glob(".rec_affect*/rec_affect/*")) and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "bag-eval ended before it could be killed; give it a longer bag"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(staging_left(tmp_path)) == 1
    run = cli("bag-eval", bag, "-o", tmp_path / "second_affect", "--no-plot", *model_args(model_bundle))
    assert run.returncode == 0, run.stderr[-2000:]
    assert staging_left(tmp_path) == []  # removed: ours, and its run is dead
    assert (tmp_path / "second_affect" / "metadata.yaml").is_file()


# -- operating-system faults: a full disk, a read-only location ---------------------------------
def test_video_to_bag_on_a_full_disk_is_one_line_and_leaves_no_bag(tmp_path, small_disk):
    video = write_video(tmp_path / "big.avi", 12, (640, 480))  # about 0.9 MB per raw frame
    disk = small_disk("disk", "3m")
    bag = disk / "clip_bag"
    one_error(cli("video-to-bag", video, bag, "--no-progress"), str(bag), "no space left on device", "ENOSPC")
    assert not bag.exists() and staging_left(disk) == []


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_every_tool_on_a_read_only_or_full_location_is_one_line_and_touches_nothing(
        fault, request, tmp_path, clip, model_bundle, untrained_checkpoint):
    if fault == "read-only":
        where, cause = request.getfixturevalue("read_only_dir"), ("read-only file system", "EROFS")
    else:
        where, cause = request.getfixturevalue("small_disk")("full", "256k"), ("no space left on device", "ENOSPC")
        (where / "mine.txt").write_text("the user's\n")
        fill(where, 0)
    before = digest(where)
    cases = {
        "video-to-bag": (["video-to-bag", clip, where / "bag", "--no-progress"], where / "bag"),
        "predict": (["predict", clip, "-o", where / "out.csv", *model_args(model_bundle)], where / "out.csv"),
        "bag-eval": (["bag-eval", "BAG", "-o", where / "rec_affect", "--no-plot", *model_args(model_bundle)],
                     where / "rec_affect"),
        "export": (["export", untrained_checkpoint, "-o", where / "bundle", "--no-verify", "--graphs",
                    "encoder"], where / "bundle"),
        "train": (["train", "--config", ROOT / "config" / "train_au_l3.yaml", "--out-dir", where / "run"],
                  where / "run"),
    }
    from test_bag_eval_outputs import write_bag

    write_bag(tmp_path / "rec", 3)
    for name, (args, target) in cases.items():
        args = [tmp_path / "rec" if a == "BAG" else a for a in args]
        assert one_error(cli(*args), str(target), *cause), name
    assert digest(where) == before and staging_left(where) == []


def test_an_export_that_does_not_fit_is_one_line_and_leaves_nothing(small_disk, untrained_checkpoint):
    disk = small_disk("disk", "3m")  # the encoder graph alone is larger
    (disk / "mine.txt").write_text("the user's\n")
    one_error(cli("export", untrained_checkpoint, "-o", disk / "bundle", "--no-verify"), str(disk / "bundle"),
              "no space left on device", "ENOSPC")
    assert sorted(p.name for p in disk.iterdir()) == ["mine.txt"]


def test_a_checkpoint_that_does_not_fit_leaves_the_earlier_one_whole(small_disk):
    import torch

    from abaw_ros.models import ModelConfig, create_affect_net, save_checkpoint
    from abaw_ros.outputs import OutputError

    disk = small_disk("disk", "8m")  # the all-task network's checkpoint is about 17 MB
    best = disk / "best.pt"
    best.write_bytes(b"epoch 12 weights")
    torch.manual_seed(0)
    model = create_affect_net(ModelConfig(window_length=8, n_levels=3))
    with pytest.raises(OutputError, match=r"cannot write checkpoint .*best\.pt.*no space left on device"):
        save_checkpoint(best, model)
    assert best.read_bytes() == b"epoch 12 weights" and staging_left(disk) == []


def test_bag_eval_on_a_full_disk_is_one_line_and_the_batch_goes_on(tmp_path, small_disk, model_bundle):
    from test_bag_eval_outputs import write_bag

    long_bag, short_bag = tmp_path / "bags" / "a_long", tmp_path / "bags" / "b_short"
    write_bag(long_bag, 1000)  # an affect bag of about 120 kB
    write_bag(short_bag, 2)
    disk = small_disk("disk", "1m")
    filler = fill(disk, 64 << 10)
    kept = digest(filler)
    # one bag: the affect bag cannot be finished (the error comes from closing the writer)
    one_error(cli("bag-eval", long_bag, "-o", disk / "one_affect", "--no-plot", *model_args(model_bundle)),
              "one_affect", "no space left on device")
    assert not (disk / "one_affect").exists() and staging_left(disk) == []
    # a batch: the long bag fails, the short one is written, summary.json says which
    run = cli("bag-eval", long_bag, short_bag, "-o", disk / "results", "--no-plot", *model_args(model_bundle))
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    summary = json.loads((disk / "results" / "summary.json").read_text())
    assert run.returncode == 2, run.stderr[-2000:]
    by_name = {Path(b["bag"]).name: b for b in summary["bags"]}
    assert by_name["a_long"]["status"] == "failed" and "no space left on device" in by_name["a_long"]["error"]
    assert by_name["b_short"]["status"] == "done"
    assert (disk / "results" / "b_short_affect" / "metadata.yaml").is_file()
    assert not (disk / "results" / "a_long_affect").exists() and staging_left(disk) == []
    assert digest(filler) == kept
