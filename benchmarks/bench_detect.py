"""Face detectors side by side on real face pictures: BlazeFace (full / short range) vs MTCNN.

    python benchmarks/bench_detect.py [--threads 1] [--iou 0.4] [--min-face-size 40] [--json out.json]

Prints, in one run:

1. detection quality per picture set: recall (ground-truth faces matched by a detection
   with IoU >= ``--iou``), mean IoU of the matched faces, false positives; the sets are
   scikit-image's real faces: Labeled Faces in the Wild (``lfw_subset``: 100 faces, pasted
   4 to a 640x480 frame at 60 / 100 / 140 px, and its 100 non-face patches), the
   astronaut at several sizes (small faces) and tilted in the image plane, and frames with
   several faces (frontal, mirrored, the cameraman turned three-quarter away);
2. CPU ms per frame of each detector over all those frames, and the ratio to MTCNN;
3. alignment: on the faces both BlazeFace (full) and MTCNN find, how far BlazeFace's
   aligned 112x112 crop is from MTCNN's (where MTCNN's template points land in
   BlazeFace's crop, in crop pixels) and the per-landmark distance in crop pixels;
4. detect-then-track on a moving face (the astronaut's head walking across the frame and
   back): landmark error against the full detector on every frame, in crop pixels, for
   the landmark stage between detector runs vs stale landmarks, by ``detection_interval``,
   with CPU ms per frame; and the landmark stage's cost per face next to a detector run.

Ground-truth boxes: the pasted region for LFW (its crops are tight), by eye for the
astronaut and the cameraman. CPU time (``time.thread_time``, single-threaded sessions by
default) counts only this process's cycles, so the ratios hold on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from abaw_ros.config import PipelineConfig
from abaw_ros.perception.alignment import similarity_transform, template
from abaw_ros.perception.boxes import iou_matrix
from abaw_ros.perception.detection import FaceDetection, FaceDetector
from abaw_ros.perception.tracking import DetectAndTrack, FaceTracker

ASTRONAUT_FACE = np.array([170.0, 50.0, 280.0, 185.0])
CAMERAMAN_FACE = np.array([195.0, 115.0, 260.0, 200.0])
FRAME = (480, 640)
Sample = tuple[np.ndarray, np.ndarray]  # frame (BGR), ground-truth boxes (K, 4)


# --- picture sets ----------------------------------------------------------------------
def _paste_lfw(indices: range, size: int, rng: np.random.Generator) -> Sample:
    from skimage import data

    lfw = data.lfw_subset()
    frame = np.full((*FRAME, 3), 110, np.uint8)
    boxes = []
    for slot, index in enumerate(indices):
        face = cv2.resize((lfw[index] * 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
        x = 10 + (slot % 2) * 320 + int(rng.integers(0, 300 - size))
        y = 10 + (slot // 2) * 240 + int(rng.integers(0, 220 - size))
        frame[y:y + size, x:x + size] = face[..., None]
        boxes.append([x, y, x + size, y + size])
    return frame, np.array(boxes, dtype=np.float64)


def lfw_faces(size: int) -> list[Sample]:
    rng = np.random.default_rng(size)
    return [_paste_lfw(range(k, k + 4), size, rng) for k in range(0, 100, 4)]


def lfw_non_faces() -> list[Sample]:
    rng = np.random.default_rng(0)
    return [(_paste_lfw(range(k, k + 4), 100, rng)[0], np.empty((0, 4))) for k in range(100, 200, 4)]


def _placed(image: np.ndarray, face: np.ndarray, scale: float, x: int, y: int) -> Sample:
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((*FRAME, 3), 90, np.uint8)
    h, w = min(small.shape[0], FRAME[0] - y), min(small.shape[1], FRAME[1] - x)
    frame[y:y + h, x:x + w] = small[:h, :w]
    return frame, (face * scale + [x, y, x, y])[None]


def astronaut_sizes(astronaut: np.ndarray) -> list[Sample]:
    """Face widths 33 to 121 px in a 640x480 frame."""
    return [_placed(astronaut, ASTRONAUT_FACE, s, 100, 40) for s in (0.3, 0.4, 0.5, 0.6, 0.8, 1.1)]


def astronaut_grey(astronaut: np.ndarray) -> list[Sample]:
    """The same sizes in grey (a mono camera)."""
    grey = cv2.cvtColor(cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return astronaut_sizes(grey)


def astronaut_tilted(astronaut: np.ndarray) -> list[Sample]:
    """In-plane rotations of +-20 and +-40 degrees about the face centre; the truth is the
    upright face box moved to the rotated centre."""
    samples = []
    frame, (box,) = _placed(astronaut, ASTRONAUT_FACE, 0.8, 150, 40)
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    for angle in (-40, -20, 20, 40):
        rotation = cv2.getRotationMatrix2D(centre, angle, 1.0)
        rotated = cv2.warpAffine(frame, rotation, (FRAME[1], FRAME[0]), borderValue=(90, 90, 90))
        samples.append((rotated, box[None]))
    return samples


def several_faces(astronaut: np.ndarray) -> list[Sample]:
    """Frames with two or three faces: frontal, mirrored and smaller, turned (cameraman)."""
    from skimage import data

    cameraman = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)
    head = astronaut[20:240, 130:320]
    samples = []
    frame = np.full((*FRAME, 3), 110, np.uint8)
    frame[20:240, 10:200] = head
    frame[40:280, 230:410] = cameraman[60:300, 130:310]
    small = cv2.resize(cv2.flip(head, 1), None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    frame[250:250 + small.shape[0], 470:470 + small.shape[1]] = small
    samples.append((frame, np.array([[50, 30, 160, 165], [295, 95, 370, 180], [497, 271, 574, 366]], float)))
    frame = np.full((*FRAME, 3), 110, np.uint8)
    cam_small = cv2.resize(cameraman, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    frame[0:384, 0:384] = cam_small
    frame[200:420, 420:610] = cv2.flip(head, 1)
    samples.append((frame, np.vstack([CAMERAMAN_FACE * 0.75, [450, 230, 560, 365]])))
    grid = np.full((*FRAME, 3), 110, np.uint8)
    boxes = []
    for k, (x, y) in enumerate([(20, 10), (340, 10), (20, 250), (340, 250)]):
        scaled = cv2.resize(head if k % 2 == 0 else cv2.flip(head, 1), None, fx=1.0, fy=1.0)
        part = scaled[:220, :190]
        grid[y:y + part.shape[0], x:x + part.shape[1]] = part
        boxes.append([x + 40, y + 30, x + 150, y + 165] if k % 2 == 0 else [x + 30, y + 30, x + 140, y + 165])
    samples.append((grid, np.array(boxes, float)))
    return samples


def picture_sets(astronaut: np.ndarray) -> dict[str, list[Sample]]:
    return {
        "LFW faces 60 px": lfw_faces(60),
        "LFW faces 100 px": lfw_faces(100),
        "LFW faces 140 px": lfw_faces(140),
        "LFW non-faces": lfw_non_faces(),
        "astronaut 33-121 px": astronaut_sizes(astronaut),
        "astronaut 33-121 px, grey": astronaut_grey(astronaut),
        "astronaut tilted +-20/40 deg": astronaut_tilted(astronaut),
        "2-4 faces, frontal/turned": several_faces(astronaut),
    }


# --- scoring ---------------------------------------------------------------------------
def match(truth: np.ndarray, faces: list[FaceDetection], threshold: float) -> list[tuple[int, int, float]]:
    """Greedy one-to-one (truth, detection, IoU) pairs with IoU >= threshold."""
    if len(truth) == 0 or not faces:
        return []
    iou = iou_matrix(truth, np.stack([f.box for f in faces]))
    pairs = []
    while iou.size and iou.max() >= threshold:
        t, d = np.unravel_index(int(iou.argmax()), iou.shape)
        pairs.append((int(t), int(d), float(iou[t, d])))
        iou[t, :] = -1
        iou[:, d] = -1
    return pairs


def cpu_ms(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.thread_time()
    out = fn()
    return out, (time.thread_time() - start) * 1e3


def crop_shift(landmarks: np.ndarray, reference: np.ndarray, size: int = 112) -> float:
    """Mean distance, in crop pixels, between where the template points of the crop
    aligned on ``reference`` land in the crop aligned on ``landmarks``."""
    to_ref = np.vstack([similarity_transform(reference, template(size)), [0, 0, 1]])
    to_other = np.vstack([similarity_transform(landmarks, template(size)), [0, 0, 1]])
    points = np.hstack([template(size), np.ones((5, 1))])
    moved = (to_other @ np.linalg.inv(to_ref) @ points.T).T[:, :2]
    return float(np.linalg.norm(moved - template(size), axis=1).mean())


def crop_pixel_errors(landmarks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-landmark distance scaled to the 112x112 crop by the reference's eye distance."""
    eye = np.linalg.norm(reference[1] - reference[0])
    return np.linalg.norm(landmarks - reference, axis=1) * (template()[1, 0] - template()[0, 0]) / eye


# --- detect-then-track -----------------------------------------------------------------
def walking_face(astronaut: np.ndarray, frames: int = 60) -> list[np.ndarray]:
    """The astronaut's head crossing the frame and back (up to 14 px and 4 % scale per
    frame), as in the tracking tests."""
    head = astronaut[20:240, 130:320]
    sequence = []
    for i in range(frames):
        phase = i if i < frames // 2 else frames - 1 - i
        scale = 0.8 + 0.02 * phase
        scaled = cv2.resize(head, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        frame = np.full((*FRAME, 3), 100, np.uint8)
        x, y = 20 + 12 * phase, 30 + 4 * phase
        h, w = min(scaled.shape[0], FRAME[0] - y), min(scaled.shape[1], FRAME[1] - x)
        frame[y:y + h, x:x + w] = scaled[:h, :w]
        sequence.append(frame)
    return sequence


def tracking_rows(detector: FaceDetector, frames: list[np.ndarray], intervals: tuple[int, ...]) -> list[dict]:
    reference = []
    for frame in frames:
        faces = detector.detect(frame)
        reference.append(faces[0].landmarks if faces else None)
    rows = []
    for interval in intervals:
        for mode, stage in (("landmark stage", detector.landmark_stage()), ("stale", None)):
            if interval == 1 and mode == "stale":
                continue
            follower = DetectAndTrack(detector, FaceTracker(min_hits=1), interval=interval, stage=stage)
            errors, start = [], time.thread_time()
            for frame, expected in zip(frames, reference, strict=True):
                tracks = follower.step(frame)
                if tracks and expected is not None:
                    errors.append(crop_pixel_errors(tracks[0].landmarks, expected).mean())
            rows.append({"detector": detector.name, "interval": interval, "between runs": mode,
                         "mean_err": float(np.mean(errors)), "max_err": float(np.max(errors)),
                         "detector_runs": follower.detector_runs,
                         "cpu_ms_per_frame": (time.thread_time() - start) * 1e3 / len(frames)})
    return rows


# ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="threads per model session (default 1)")
    parser.add_argument("--iou", type=float, default=0.4, help="IoU that counts a face as found (default 0.4)")
    parser.add_argument("--min-face-size", type=int, default=40,
                        help="MTCNN's min_face_size (default 40, the shipped config; it also bounds its cost)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if args.threads < 1:
        print(f"--threads={args.threads}: must be >= 1", file=sys.stderr)
        return 2
    if args.min_face_size < 12:
        print(f"--min-face-size={args.min_face_size}: must be >= 12", file=sys.stderr)
        return 2
    if not 0.0 < args.iou <= 1.0:
        print(f"--iou={args.iou}: must be in (0, 1]", file=sys.stderr)
        return 2

    from skimage import data

    from abaw_ros.perception.blazeface import BlazeFaceDetector
    from abaw_ros.perception.mtcnn import MTCNNDetector

    astronaut = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    threshold = PipelineConfig().detection_threshold  # the shipped detection_threshold
    detectors: dict[str, FaceDetector] = {
        "mtcnn": MTCNNDetector(min_face_size=args.min_face_size, score_threshold=threshold,
                               num_threads=args.threads),
        "blazeface full": BlazeFaceDetector("full", score_threshold=threshold, num_threads=args.threads),
        "blazeface short": BlazeFaceDetector("short", score_threshold=threshold, num_threads=args.threads),
    }
    sets = picture_sets(astronaut)
    for detector in detectors.values():  # warm up
        detector.detect(astronaut)

    results: dict[str, dict] = {"quality": {}, "cpu_ms_per_frame": {}, "alignment": {}, "tracking": []}
    found: dict[str, dict[tuple[str, int, int], FaceDetection]] = {name: {} for name in detectors}
    times: dict[str, list[float]] = {name: [] for name in detectors}
    print(f"1. detection quality (a face counts as found at IoU >= {args.iou}); detection_threshold "
          f"{threshold} (MTCNN's last stage: 0.7), MTCNN min_face_size {args.min_face_size}")
    print(f"{'set':30s} {'faces':>5s}  " + "  ".join(f"{n:>24s}" for n in detectors))
    print(f"{'':30s} {'':5s}  " + "  ".join(f"{'recall  IoU   false pos':>24s}" for _ in detectors))
    for set_name, samples in sets.items():
        total = sum(len(truth) for _, truth in samples)
        cells = []
        for name, detector in detectors.items():
            matched, ious, false_pos = 0, [], 0
            for k, (frame, truth) in enumerate(samples):
                faces, ms = cpu_ms(lambda d=detector, f=frame: d.detect(f))
                times[name].append(ms)
                pairs = match(truth, faces, args.iou)
                matched += len(pairs)
                ious += [iou for _, _, iou in pairs]
                false_pos += len(faces) - len(pairs)
                for t, d, _ in pairs:
                    found[name][(set_name, k, t)] = faces[d]
            recall = matched / total if total else float("nan")
            results["quality"].setdefault(set_name, {})[name] = {
                "faces": total, "recall": recall, "mean_iou": float(np.mean(ious)) if ious else None,
                "false_positives": false_pos}
            iou_text = f"{np.mean(ious):.2f}" if ious else "  - "
            recall_text = f"{recall:5.2f}" if total else "   - "
            cells.append(f"{recall_text}  {iou_text}  {false_pos:8d}")
        print(f"{set_name:30s} {total:5d}  " + "  ".join(f"{c:>24s}" for c in cells))

    print("\n2. CPU ms per frame over all frames above (median; single thread per session: "
          f"--threads {args.threads})")
    base = float(np.median(times["mtcnn"]))
    for name in detectors:
        median = float(np.median(times[name]))
        results["cpu_ms_per_frame"][name] = median
        print(f"   {name:16s} {median:6.2f} ms   MTCNN / this = {base / median:5.2f}x")

    common = sorted(set(found["mtcnn"]) & set(found["blazeface full"]))
    shifts = [crop_shift(found["blazeface full"][k].landmarks, found["mtcnn"][k].landmarks) for k in common]
    per_point = np.array([crop_pixel_errors(found["blazeface full"][k].landmarks, found["mtcnn"][k].landmarks)
                          for k in common])
    results["alignment"] = {"faces": len(common), "crop_shift_mean": float(np.mean(shifts)),
                            "crop_shift_median": float(np.median(shifts)),
                            "landmark_crop_px_mean": per_point.mean(axis=0).tolist()}
    print(f"\n3. alignment, BlazeFace full vs MTCNN on the {len(common)} faces both found:")
    print(f"   crop shift (MTCNN's template points in BlazeFace's 112 crop): mean {np.mean(shifts):.2f} px, "
          f"median {np.median(shifts):.2f}, 90th percentile {np.percentile(shifts, 90):.2f}")
    print("   landmark distance in crop px (left eye, right eye, nose, mouth left, mouth right): "
          + ", ".join(f"{v:.2f}" for v in per_point.mean(axis=0)))

    frames = walking_face(astronaut)
    print(f"\n4. detect-then-track on a moving face ({len(frames)} frames), landmark error vs the "
          "full detector on every frame (crop px):")
    print(f"   {'detector':10s} {'interval':>8s} {'between runs':>15s} {'mean':>6s} {'max':>6s} "
          f"{'detector runs':>13s} {'CPU ms/frame':>12s}")
    for name in ("blazeface full", "mtcnn"):
        for row in tracking_rows(detectors[name], frames, (1, 2, 5, 10)):
            results["tracking"].append(row)
            print(f"   {row['detector']:10s} {row['interval']:8d} {row['between runs']:>15s} "
                  f"{row['mean_err']:6.2f} {row['max_err']:6.2f} {row['detector_runs']:13d} "
                  f"{row['cpu_ms_per_frame']:12.2f}")

    grid, _ = several_faces(astronaut)[2]
    print("\n   cost on a frame with 4 faces (CPU ms): detector run vs landmark stage on the 4 tracks")
    for name in ("blazeface full", "mtcnn"):
        detector = detectors[name]
        faces = detector.detect(grid)
        stage = detector.landmark_stage()
        detect_ms = min(cpu_ms(lambda d=detector: d.detect(grid))[1] for _ in range(5))
        refine_ms = min(cpu_ms(lambda s=stage, f=faces: s.refine(grid, f))[1] for _ in range(5))
        results.setdefault("four_faces", {})[name] = {"faces": len(faces), "detect_ms": detect_ms,
                                                      "refine_ms": refine_ms}
        print(f"   {name:16s} {len(faces)} faces: detect {detect_ms:6.2f} ms, landmark stage {refine_ms:6.2f} ms "
              f"({detect_ms / refine_ms:.1f}x cheaper)")

    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
