"""Timeline plots: the hesitancy line sits at the model's threshold, the title names the
followed face and the headline metrics, and a tracker id that never occurs fails with the
ids that do (bag-eval: exit 2, one line)."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from abaw_ros import cli
from abaw_ros.config import PipelineConfig
from abaw_ros.offline.annotations import FrameLabels
from abaw_ros.offline.bag_eval import BagEvalOptions, evaluate_bag
from abaw_ros.offline.bag_writers import ImageBagWriter
from abaw_ros.offline.plots import plot_timeline, timeline_figure
from abaw_ros.offline.report import compute_metrics
from abaw_ros.offline.track import PredictionTrack, UnknownFaceError
from abaw_ros.perception.pipeline import PerceptionPipeline

ROOT = Path(__file__).resolve().parents[1]
N = 20


def face(face_id: str, size: int, valence: float, hesitancy: float) -> dict:
    return {"face_id": face_id, "roi": (0, 0, size, size), "detection_confidence": 0.9, "window_length": 8,
            "frames_observed": 8, "valence": valence, "arousal": -valence, "au_probability": np.full(12, 0.3),
            "au_active": np.zeros(12, bool), "mimicry_intensity": np.full(6, 0.1),
            "hesitancy_probability": hesitancy, "hesitant": hesitancy >= 0.2}


def make_track(policy: str = "largest") -> tuple[PredictionTrack, object]:
    """face_1 is the larger face in the first half, face_2 in the second half."""
    rng = np.random.default_rng(0)
    track = PredictionTrack(policy)
    va = rng.uniform(-0.8, 0.8, N)
    ah = rng.uniform(0, 1, N)
    for i in range(N):
        big, small = (("face_1", "face_2") if i < N // 2 else ("face_2", "face_1"))
        track.add(i, i * 40_000_000, [face(big, 80, float(va[i]), float(ah[i])), face(small, 40, 0.0, 0.0)])
    labels = FrameLabels("index", np.arange(N), values={
        "va": np.stack([va + rng.normal(0, 0.2, N), -va], axis=1).astype(np.float32),
        "ah": (ah > 0.5).astype(np.float32)[:, None]},
        valid={"va": np.ones(N, bool), "ah": np.ones(N, bool)})
    return track, labels.align(track.index_array, track.stamp_array, 0)


def test_hesitancy_line_at_the_model_threshold_and_metrics_in_the_title(tmp_path):
    track, aligned = make_track()
    scores = compute_metrics(track, aligned)
    fig = timeline_figure(track, aligned, title="rec /camera", ah_threshold=0.2, metrics=scores)
    levels = [set(np.asarray(line.get_ydata(), dtype=float)) for line in fig.axes_by_row["hesitancy"].lines]
    assert {0.2} in levels and {0.5} not in levels
    title = fig._suptitle.get_text()
    assert title.startswith("rec /camera - face: largest (ids face_1, face_2)")
    assert f"va_ccc_mean {scores['va']['scores']['va_ccc_mean']:.3f} ({N} frames)" in title
    assert f"ah_f1_macro {scores['ah']['scores']['ah_f1_macro']:.3f}" in title

    track_2, aligned_2 = make_track("face_2")
    assert "face face_2" in timeline_figure(track_2, aligned_2)._suptitle.get_text()
    path = plot_timeline(track, tmp_path / "t.png", aligned, ah_threshold=0.2, metrics=scores, size_px=(800, 600))
    assert cv2.imread(str(path)).shape == (600, 800, 3)


def test_an_unknown_face_lists_the_ids_present(tmp_path):
    track, aligned = make_track("face_9")
    with pytest.raises(UnknownFaceError, match=r"--face 'face_9'.*ids present: face_1 \(20 frames\), "
                                               r"face_2 \(20 frames\)"):
        plot_timeline(track, tmp_path / "t.png", aligned)
    assert not (tmp_path / "t.png").exists()


@pytest.fixture(scope="module")
def bag(tmp_path_factory, astronaut_bgr) -> Path:
    path = tmp_path_factory.mktemp("plots") / "rec"
    person = cv2.resize(astronaut_bgr, (240, 240))
    with ImageBagWriter(path, "/camera/image_raw", "mcap") as writer:
        for i in range(6):
            frame = np.full((300, 400, 3), 100, np.uint8)
            frame[30:270, 20 + 6 * i:260 + 6 * i] = person
            writer.write(frame, 1_700_000_000_000_000_000 + i * 40_000_000)
    return path


def test_bag_eval_with_an_unknown_face_exits_2_naming_the_ids(tmp_path, bag, model_bundle, caplog):
    caplog.set_level(logging.ERROR)
    out = tmp_path / "rec_affect"
    code = cli.main(["bag-eval", str(bag), "-o", str(out), "--face", "face_9", "--model-file-path",
                     str(model_bundle), "-p", "backend:=onnxruntime", "-p", "warmup:=false", "--no-progress"])
    assert code == 2
    (record,) = caplog.records
    assert "--face 'face_9'" in record.getMessage() and "ids present: face_1 (" in record.getMessage()
    assert (out / "metadata.yaml").is_file()  # the complete affect bag is kept
    assert not (tmp_path / "rec_affect_report.json").exists() and not (tmp_path / "rec_affect_timeline.png").exists()


def test_bag_eval_plots_the_threshold_the_model_carries(tmp_path, bag, model_bundle):
    config = dataclasses.replace(PipelineConfig.from_yaml(ROOT / "config" / "affect.yaml"),
                                 model_file_path=str(model_bundle), backend="onnxruntime", warmup=False)
    pipeline = PerceptionPipeline(config)
    pipeline.metadata = dataclasses.replace(pipeline.metadata, ah_threshold=0.2)  # as a tuned model carries
    result = evaluate_bag(BagEvalOptions(bag, tmp_path / "rec_affect", progress=False), config, pipeline)
    report = json.loads(result.report.read_text())
    assert report["model"]["ah_threshold"] == 0.2 and result.plot.is_file()
