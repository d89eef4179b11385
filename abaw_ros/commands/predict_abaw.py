"""``abaw-affect predict-abaw``: predictions for an ABAW test set (no labels) in the
submission format, complete by construction and checked after writing.

    abaw-affect predict-abaw --checkpoint au.pt --task au --affwild2-images /data/affwild2 \\
        --sample CVPR_ABAW_AU_test_set_sample.txt --out submission/
    abaw-affect predict-abaw --checkpoint va.pt --task va --affwild2-images /data/affwild2 \\
        --videos Valence_Arousal_Estimation_Challenge_test_set_release.txt --raw-videos /data/affwild2/videos --out sub/
    abaw-affect predict-abaw --checkpoint emi.pt --task emi --hume-root /data/hume --videos test_split.csv --out sub/
    abaw-affect predict-abaw --checkpoint ah.pt --task ah --bah-frames /data/bah/cropped-aligned-faces \\
        --videos /data/bah/split/test.txt --out sub/

VA and AU list every frame of every test video: the frames come from the organisers'
sample file (``--sample``), a ``<video>,<frames>`` list (``--frame-counts``) or the test
videos themselves (``--raw-videos``, frames counted by decoding); without one of them the
command refuses (images alone end at each video's last face). A frame without a face image
is predicted from the nearest crop. Labels use the official threshold 0.5 unless
``--thresholds tuned`` asks for the checkpoint's validation-tuned ones. EMI writes one row
per video (frame mean), AH one 0/1 per video (mean probability), as the challenges score
them (see :mod:`abaw_ros.data.submission`). ``abaw-affect check-submission`` checks a folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from abaw_ros.commands.options import add_number
from abaw_ros.config import Bounds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint (best.pt)")
    parser.add_argument("--task", choices=("va", "au", "emi", "ah"),
                        help="task to predict (default: the checkpoint's first of va, au)")
    parser.add_argument("--videos", type=Path,
                        help="the test videos, one per line (official video list; EMI: Filename per line or the "
                             "test CSV; AH: the split file)")
    parser.add_argument("--affwild2-images", type=Path, help="VA/AU: folder holding cropped_aligned/")
    parser.add_argument("--sample", type=Path, help="VA/AU: the organisers' sample submission file (frames, order)")
    parser.add_argument("--frame-counts", type=Path, help="VA/AU: '<video>,<frames>' per line")
    parser.add_argument("--raw-videos", type=Path, help="VA/AU: folder of the test videos (<video>.mp4 ...); "
                                                        "frames counted by decoding them")
    parser.add_argument("--hume-root", type=Path, help="EMI: folder holding face_images/")
    parser.add_argument("--bah-frames", type=Path, help="AH: folder of <video id>/frame-<N>.jpg")
    parser.add_argument("--thresholds", choices=("official", "tuned"), default="official",
                        help="AU/AH labels at the official 0.5 (default) or at the checkpoint's thresholds tuned on "
                             "validation")
    add_number(parser, "--eval-stride", kind=int, bounds=Bounds(1, 256, "frames"),
               help="window stride (default T; 1 = causal window per frame)")
    add_number(parser, "--batch-size", kind=int, bounds=Bounds(1, 4096, "windows"), default=32)
    add_number(parser, "--num-workers", kind=int, bounds=Bounds(0, 256, "processes"), default=2)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", type=Path, required=True, help="folder for the submission files")


def run(args: argparse.Namespace) -> int:
    from abaw_ros.data.records import DataFormatError

    try:
        return _run(args)
    except (DataFormatError, ValueError, FileNotFoundError) as exc:
        print(f"abaw-affect predict-abaw: {exc}", file=sys.stderr)
        return 2


def read_test_videos(path: Path, task: str) -> list[str]:
    """Video names of a test list: one per line, first CSV column; EMI Filenames as folder
    names (``7`` -> ``00007``), AH split paths as frame-folder ids."""
    from abaw_ros.data.bah import video_id
    from abaw_ros.data.hume import video_folder_name
    from abaw_ros.data.records import DataFormatError, read_lines

    if not path.is_file():
        raise FileNotFoundError(f"video list {path}: no such file")
    names = []
    for line_no, line in enumerate(read_lines(path), start=1):
        first = line.split(",", 1)[0].strip()
        if not first or (line_no == 1 and first.lower() in ("filename", "video", "video_path")):
            continue
        if task == "emi":
            if not first.isdigit():
                raise DataFormatError(f"{path}:{line_no}: Filename {first!r} is not a number")
            first = video_folder_name(first)
        elif task == "ah":
            first = video_id(first)
        names.append(first)
    if not names:
        raise DataFormatError(f"{path}: no video names")
    if len(set(names)) != len(names):
        raise DataFormatError(f"{path}: a video is listed twice")
    return names


def affwild2_frames(args: argparse.Namespace) -> dict[str, list[int]]:
    """The frames every VA/AU test video must list (refused when no source gives them)."""
    if args.affwild2_images is None:
        raise ValueError(f"--task {args.task} needs --affwild2-images (the folder holding cropped_aligned/)")
    return expected_frames_from_args(args)


def expected_frames_from_args(args: argparse.Namespace) -> dict[str, list[int]]:
    """The frames each VA/AU test video must list, from whichever of --sample,
    --frame-counts or --raw-videos (with --videos) was given; one of them at most."""
    from abaw_ros.data.sources import read_sample_file, read_video_list
    from abaw_ros.data.submission import expected_frames, frame_counts_from_videos, read_frame_counts

    given = [name for name, v in (("--sample", args.sample), ("--frame-counts", args.frame_counts),
                                  ("--raw-videos", args.raw_videos)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)}: give one source of the frames")
    videos = read_video_list(args.videos) if args.videos else None
    sample = read_sample_file(args.sample) if args.sample else None
    counts = read_frame_counts(args.frame_counts) if args.frame_counts else None
    if args.raw_videos is not None:
        if videos is None:
            raise ValueError("--raw-videos needs --videos (the test-set video list)")
        counts = frame_counts_from_videos(args.raw_videos, videos)
    return expected_frames(videos, sample, counts)


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from abaw_ros.data.dataset import ClipDataset
    from abaw_ros.data.submission import COMBINED_FILES, FRAME_FILES
    from abaw_ros.data.transforms import ClipTransform
    from abaw_ros.models import load_checkpoint
    from abaw_ros.runtime.identity import ModelIdentity
    from abaw_ros.tasks import output_slices
    from abaw_ros.training.distributed import DistContext, pick_device
    from abaw_ros.training.evaluation import predict

    # every input is checked before the model loads and before anything is written
    model_task = args.task
    frames: dict[str, list[int]] | None = None
    if model_task is None or model_task in FRAME_FILES:
        frames = affwild2_frames(args) if model_task is not None else None
    elif args.videos is None:
        raise ValueError(f"--task {model_task} needs --videos (the test videos)")
    model, info = load_checkpoint(args.checkpoint, map_location="cpu")
    print(f"model {ModelIdentity(str(args.checkpoint), Path(args.checkpoint)).model_id}")  # as node, bag-eval, predict
    cfg = info["config"]
    task = args.task or next((t for t in cfg.tasks if t in FRAME_FILES), None)
    if task is None or task not in cfg.tasks:
        raise ValueError(f"--task {task}: the checkpoint predicts {list(cfg.tasks)}")
    if frames is None and task in FRAME_FILES:
        args.task = task
        frames = affwild2_frames(args)
    thresholds = _thresholds(task, args.thresholds, info)
    targets = [args.out / COMBINED_FILES[task]] + ([args.out / task.upper()] if task in FRAME_FILES else [])
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise ValueError(f"{existing[0]} exists: predict-abaw writes only new files; choose another --out")

    if task in FRAME_FILES:
        from abaw_ros.data.sources import load_affwild2_test

        assert frames is not None
        videos = list(frames)
        records = load_affwild2_test(args.affwild2_images, task, videos, frames)
    else:
        videos = read_test_videos(args.videos, task)
        records = _unlabelled_records(task, args, videos)

    device = pick_device(args.device)
    model.to(device)
    dataset = ClipDataset(records, cfg.tasks, cfg.window_length, train=False,
                          transform=ClipTransform(cfg.input_size, cfg.mean, cfg.std), eval_stride=args.eval_stride)
    with torch.no_grad():
        preds = predict(model, dataset, DistContext(device=device), args.batch_size, args.num_workers,
                        amp=device.type == "cuda")
    s = output_slices(cfg.tasks)[task]
    values = {rec.name: p[:, s] for rec, p in zip(records, preds, strict=True)}
    return _write(task, args.out, videos, records, values, thresholds, frames, np)


def _thresholds(task: str, which: str, info: dict):
    from abaw_ros.tasks import TASKS

    spec = TASKS[task]  # the threshold kind, official value and stored name: tasks.Task
    if spec.threshold == "none":
        return None
    if which == "official":
        return spec.default_thresholds()
    key = spec.threshold_field
    if info.get(key) is None:
        raise ValueError(f"--thresholds tuned: the checkpoint stores no {key} (train with train.tune_thresholds)")
    return info[key]


def _unlabelled_records(task: str, args: argparse.Namespace, videos: list[str]):
    """EMI / AH test videos: every face image of each video, labels empty."""
    import numpy as np

    from abaw_ros.data.bah import list_bah_frames
    from abaw_ros.data.hume import list_face_images
    from abaw_ros.data.records import DataFormatError, VideoRecord
    from abaw_ros.tasks import TASKS

    # where each per-video task's test images are: (argument, its flag, video folder, (number, image) pairs)
    sources = {
        "emi": ("hume_root", "--hume-root", lambda root, video: root / "face_images" / video, list_face_images),
        "ah": ("bah_frames", "--bah-frames", lambda root, video: root / video,
               lambda folder: sorted(list_bah_frames(folder).items())),
    }
    attribute, flag, folder_of, list_images = sources[task]
    root = getattr(args, attribute)
    if root is None:
        raise ValueError(f"--task {task} needs {flag}")
    records = []
    for video in videos:
        folder = folder_of(root, video)
        images = list_images(folder)
        if not images:
            # without one image the video cannot be predicted, and a submission without it is invalid
            raise DataFormatError(f"test video {video!r}: no face images in {folder}")
        n = len(images)
        records.append(VideoRecord(task=task, name=video, frames=[p for _, p in images],
                                   labels=np.zeros((n, TASKS[task].size), np.float32), valid=np.zeros(n, bool),
                                   frame_numbers=np.array([k for k, _ in images], np.int64), source=folder))
    return records


def _write(task, out: Path, videos, records, values, thresholds, frames, np) -> int:
    from abaw_ros.data.submission import (
        COMBINED_FILES,
        FRAME_FILES,
        HEADERS,
        check_submission,
        frame_lines,
        write_lines,
    )
    from abaw_ros.tasks import TASKS

    combined = out / COMBINED_FILES[task]
    if task in FRAME_FILES:
        per_video = {}
        for rec in records:
            per_video[rec.name] = frame_lines(task, rec.name, rec.frame_numbers, values[rec.name], thresholds)
            write_lines(out / task.upper() / f"{rec.name}.txt", HEADERS[task], per_video[rec.name])
        write_lines(combined, HEADERS[task], [line for v in videos for line in per_video[v]])
        expected = frames
        shown = sum(r.substituted for r in records)
        summary = (f"{task.upper()}: {sum(len(v) for v in per_video.values())} frames of {len(videos)} test videos "
                   f"({shown} without a face image, predicted from the nearest crop) -> {combined} and "
                   f"{out / task.upper()}/<video>.txt")
    elif TASKS[task].threshold == "none":  # the per-video values (EMI)
        write_lines(combined, HEADERS[task], [f"{int(v)}," + ",".join(f"{x:.6f}" for x in values[v].mean(0))
                                              for v in videos])
        expected = [str(int(v)) for v in videos]
        summary = f"EMI: {len(videos)} test videos (mean of the frame predictions) -> {combined}"
    else:
        means = {v: float(values[v][:, 0].mean()) for v in videos}
        write_lines(combined, HEADERS[task], [f"{v},{int(means[v] >= thresholds)}" for v in videos])
        write_lines(out / "AH_frames.txt", "image_location,hesitancy_probability",
                    [f"{r.name}/frame-{int(n)}.jpg,{p[0]:.6f}" for r in records
                     for n, p in zip(r.frame_numbers, values[r.name], strict=True)])
        expected = videos
        summary = (f"AH: {len(videos)} test videos, 0/1 per video (mean probability >= {thresholds:g}) -> {combined}; "
                   f"frame probabilities in {out / 'AH_frames.txt'}")
    problems = check_submission(out, task, expected)
    if problems:  # a bug, not bad input: say so loudly
        raise RuntimeError(f"the written submission failed its own check: {problems}")
    print(summary)
    return 0
