"""A task registered from outside the package runs through everything a built-in task
does: a training step and the official score on a generated fixture, the ONNX export,
the perception pipeline in ONNX Runtime, the affect message and the prediction CSV row,
and the drawn caption. Every per-task decision is a lookup on ``tasks.Task``; a chain
that names the built-in tasks would not know this one."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from abaw_ros import tasks
from abaw_ros.data.dataset import ClipDataset
from abaw_ros.data.records import VideoRecord
from abaw_ros.data.transforms import ClipTransform
from abaw_ros.metrics import PRIMARY_METRIC, score_task
from abaw_ros.models import ModelConfig, create_affect_net, export_onnx
from abaw_ros.tasks import TASKS, Task, register_task, unregister_task

TOY = "gaze"
TASK_SET = ("va", TOY)
WINDOW = 4


def _caption(values: np.ndarray, _flags) -> str:
    return f"gaze {float(values[0]):.2f} {float(values[1]):.2f}"


@pytest.fixture(scope="module")
def toy_task():
    """A 2-output sigmoid regression (gaze yaw/pitch in [0, 1]) with its own loss and metric
    families (MSE + Pearson, per-frame Pearson r), registered for this module only."""
    task = register_task(Task(TOY, ("yaw", "pitch"), "sigmoid", "regression", "mean Pearson r of yaw and pitch",
                              "toy gaze direction", loss="mse_pearson", scorer="pearson", invalid_label=-9.0,
                              caption=_caption, caption_rank=5))
    try:
        yield task
    finally:
        unregister_task(TOY)
    assert TOY not in TASKS and TOY not in tasks.task_order()


@pytest.fixture(scope="module")
def toy_model(toy_task):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return create_affect_net(ModelConfig(window_length=WINDOW, n_levels=3, tasks=TASK_SET))


def _records(root: Path, astronaut_rgb: np.ndarray, videos: int = 2, frames: int = 6) -> list[VideoRecord]:
    """Face crops written as JPEGs, labelled with a yaw/pitch that follows the crop's shift;
    the last row of each video carries the invalid marker."""
    rng = np.random.default_rng(0)
    face = astronaut_rgb[20:240, 130:320]
    out = []
    for v in range(videos):
        folder = root / f"video{v}"
        folder.mkdir(parents=True)
        paths, labels = [], []
        for i in range(frames):
            shift = int(rng.integers(0, 20))
            crop = cv2.resize(np.roll(face, shift, axis=1), (112, 112))
            path = folder / f"{i + 1:05d}.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            paths.append(path)
            labels.append([shift / 20.0, 1.0 - shift / 20.0])
        labels_arr = np.asarray(labels, dtype=np.float32)
        labels_arr[-1] = TASKS[TOY].invalid_label
        valid = np.all(labels_arr != TASKS[TOY].invalid_label, axis=1)
        out.append(VideoRecord(TOY, f"video{v}", paths, labels_arr, valid, np.arange(1, frames + 1),
                               folder / "labels.txt"))
    return out


def test_registering_needs_a_new_name_and_the_builtin_tasks_stay(toy_task):
    assert tasks.task_order() == (*tasks.BUILTIN_ORDER, TOY)
    assert tasks.output_slices(TASK_SET) == {"va": slice(0, 2), TOY: slice(2, 4)}
    with pytest.raises(ValueError, match="'gaze' is registered already"):
        register_task(toy_task)
    with pytest.raises(ValueError, match="'va' is built in"):
        unregister_task("va")
    assert PRIMARY_METRIC[TOY] == "gaze_pearson_mean"


def test_a_registered_task_trains_and_is_scored_by_its_own_metric(toy_model, astronaut_rgb, tmp_path):
    from abaw_ros.training.distributed import DistContext
    from abaw_ros.training.evaluation import metrics_table, predict, score, write_submissions
    from abaw_ros.training.losses import MultiTaskLoss

    records = _records(tmp_path / "frames", astronaut_rgb)
    transform = ClipTransform(toy_model.cfg.input_size, toy_model.cfg.mean, toy_model.cfg.std)
    train_ds = ClipDataset(records, TASK_SET, WINDOW, True, transform=transform)
    batch = next(iter(DataLoader(train_ds, batch_size=2, shuffle=False)))
    loss_fn = MultiTaskLoss(TASK_SET)
    head = toy_model.head.classifier
    before = head.weight.detach().clone()
    optimizer = torch.optim.SGD(toy_model.parameters(), lr=0.1)
    toy_model.train()
    loss, parts = loss_fn(toy_model(batch["inputs"]), batch["target"], batch["mask"])
    loss.backward()
    assert set(parts) == {"va", TOY} and parts["va"] == 0.0 and parts[TOY] > 0.0  # no VA row here
    toy_rows = tasks.output_slices(TASK_SET)[TOY]
    assert head.weight.grad[toy_rows].abs().sum() > 0 and head.weight.grad[:2].abs().sum() == 0
    optimizer.step()
    assert not torch.equal(head.weight[toy_rows], before[toy_rows])

    toy_model.eval()
    val_ds = ClipDataset(records, TASK_SET, WINDOW, False, transform=transform)
    preds = predict(toy_model, val_ds, DistContext(), batch_size=2, progress=False)
    result = score(val_ds, preds, tune_thresholds=True)
    assert set(result.metrics) == {TOY}
    scores = result.metrics[TOY]
    assert set(scores) == {"gaze_pearson_mean", "gaze_pearson_yaw", "gaze_pearson_pitch"}
    assert result.score == scores["gaze_pearson_mean"]
    assert result.frames[TOY] == sum(int(r.valid.sum()) for r in records)  # per frame, invalid rows left out
    assert result.to_dict()["primary"] == {TOY: "gaze_pearson_mean"}
    assert "gaze_pearson_mean *" in metrics_table(result)
    # by hand: the same frames, the same family
    p = np.concatenate([pr[r.valid][:, toy_rows] for r, pr in zip(records, preds, strict=True)])
    t = np.concatenate([r.labels[r.valid] for r in records])
    assert scores == score_task(TASKS[TOY], p, t)
    assert write_submissions(tmp_path / "sub", val_ds, preds) == {}  # no challenge file for a new task


def test_a_registered_task_is_exported_run_published_and_written(toy_model, astronaut_bgr, tmp_path):
    from abaw_ros.config import PipelineConfig
    from abaw_ros.offline.predict import face_row
    from abaw_ros.perception.drawing import face_lines
    from abaw_ros.perception.face_values import face_affect_values
    from abaw_ros.perception.pipeline import PerceptionPipeline
    from abaw_ros.runtime import load_backend

    export_onnx(toy_model.eval(), tmp_path / "bundle")
    backend = load_backend(tmp_path / "bundle", backend="onnxruntime", num_threads=2)
    assert tuple(backend.metadata.tasks) == TASK_SET
    pipeline = PerceptionPipeline(PipelineConfig(backend="onnxruntime", window_length=WINDOW, detection_interval=1,
                                                 track_min_hits=1),
                                  backend=backend)
    frame = np.full((480, 640, 3), 100, np.uint8)
    head = astronaut_bgr[20:240, 130:320]
    frame[40:40 + head.shape[0], 60:60 + head.shape[1]] = head
    faces = []
    for i in range(3):
        faces = pipeline.process(frame, stamp_ns=1_000 + i).faces
    (face,) = faces
    gaze = face.outputs[TOY]
    assert gaze.shape == (2,) and np.all((gaze >= 0) & (gaze <= 1))  # the task's own activation

    values = face_affect_values(face, frame.shape)  # the message: VA filled, the rest NaN
    assert np.isfinite(values["valence"]) and np.isnan(values["au_probability"]).all()
    assert not any(TOY in key or key in ("yaw", "pitch") for key in values)  # the message has no such field

    row = face_row(face)  # the CSV row: the task's own columns, absent tasks empty
    assert float(row["yaw"]) == pytest.approx(float(gaze[0]), rel=1e-5)
    assert float(row["pitch"]) == pytest.approx(float(gaze[1]), rel=1e-5)
    assert row["AU1"] == "" and row["hesitant"] == "" and row["valence"] != ""

    lines = face_lines(face)
    assert lines[-1] == _caption(gaze, None) and lines[1].startswith("V ")
