"""A video file -> a ROS 2 bag of camera frames (``abaw-affect video-to-bag``).

Each decoded video frame becomes one ``sensor_msgs/Image`` (or ``CompressedImage``)
stamped at the video's own rate: frame ``i`` gets ``start + round(i * 1e9 / fps)`` ns, as
header stamp and as log time. Given annotations keyed by frame index (Aff-Wild2-style
files), a CSV keyed by those stamps is written next to the bag, so ``bag-eval`` can
score the bag whatever frames it later skips.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from abaw_ros.config import FRAME_RATE as FPS
from abaw_ros.config import STAMP_SECONDS
from abaw_ros.offline.annotations import FrameLabels, write_stamp_csv
from abaw_ros.offline.bag_types import DEFAULT_BAG_VERSION, DEFAULT_IMAGE_TOPIC, BagError
from abaw_ros.offline.bag_writers import ImageBagWriter
from abaw_ros.outputs import Output, Staging, check_outputs, write_faults

log = logging.getLogger(__name__)


@dataclass
class VideoToBagResult:
    video: Path
    bag: Path
    topic: str
    storage: str
    msgtype: str
    frames: int
    fps: float
    width: int
    height: int
    stamps_ns: np.ndarray
    labels_csv: Path | None = None

    def summary(self) -> str:
        text = (f"{self.frames} frames ({self.width}x{self.height} at {self.fps:g} fps) of {self.video} -> "
                f"{self.bag} [{self.storage}] on {self.topic} ({self.msgtype})")
        if self.labels_csv:
            text += f"\nlabels keyed by stamp: {self.labels_csv}"
        return text


LAST_STAMP_NS = STAMP_SECONDS.high * 1_000_000_000 + 999_999_999


def _check_stamps(start_ns: int, frames: int, rate: float) -> None:
    """Every stamp of ``frames`` frames from ``start_ns`` must fit a ROS 2 stamp."""
    if not STAMP_SECONDS.low <= start_ns / 1e9 <= STAMP_SECONDS.high:
        raise BagError(f"start={start_ns / 1e9:g}: the first stamp must be {STAMP_SECONDS.describe()} "
                       f"(ROS 2 stamps hold the seconds in an int32)")
    last = start_ns + round(max(frames - 1, 0) * 1e9 / rate)
    if last > LAST_STAMP_NS:
        raise BagError(f"start={start_ns / 1e9:g}: the last of {frames} frames at {rate:g} Hz would be stamped "
                       f"{last / 1e9:.0f} s, after the last ROS 2 stamp ({STAMP_SECONDS.high} s, 2038-01-19); "
                       f"give an earlier --start")


def video_to_bag(
    video: str | Path,
    bag: str | Path,
    topic: str = DEFAULT_IMAGE_TOPIC,
    storage: str = "mcap",
    compression: str | None = None,
    encoding: str = "bgr8",
    frame_id: str = "camera",
    fps: float | None = None,
    start_ns: int | None = None,
    max_frames: int | None = None,
    labels: FrameLabels | None = None,
    labels_csv: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    bag_version: int = DEFAULT_BAG_VERSION,
    inputs: list[str | Path] | tuple[str | Path, ...] = (),
) -> VideoToBagResult:
    """Write every frame of ``video`` (up to ``max_frames``) to a new bag.

    ``fps`` overrides the rate the file reports (needed when it reports none).
    ``start_ns`` is the first stamp (default: the video file's modification time, whole
    seconds, so the same file always gives the same bag). ``labels`` (keyed by frame
    index) are written as a stamp-keyed CSV to ``labels_csv`` (default ``<bag>_labels.csv``).
    ``bag_version`` is the rosbag2 metadata version (8: Humble, Jazzy, Kilted; 9: Jazzy+).
    ``inputs``: further files this run reads (annotation files), never written over.

    The bag is written beside ``bag`` and moved there only when every frame is in it: a
    run that fails (an undecodable stream, a full disk) or is interrupted leaves nothing
    under ``bag`` (:class:`ImageBagWriter` keeps no partial bag); an existing bag is
    replaced only with ``overwrite`` and only when video-to-bag wrote it
    (:mod:`abaw_ros.offline.outputs`).
    """
    video, bag = Path(video), Path(bag)
    if not video.is_file():
        raise FileNotFoundError(f"video {str(video)!r} does not exist")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames={max_frames}: must be >= 1")
    read = [video, *map(Path, inputs)]
    csv_path, replace_csv = None, False
    if labels is not None:
        csv_path = Path(labels_csv) if labels_csv is not None else bag.with_name(bag.name + "_labels.csv")
        # checked with the bag before anything is written: not an input, not inside the bag,
        # and an existing file only with overwrite (a stamp CSV carries no marker of ours)
        check_outputs([Output(bag, "output bag", folder=True), Output(csv_path, "labels CSV")], overwrite=True,
                      inputs=read)
        replace_csv = check_outputs([Output(csv_path, "labels CSV")], overwrite, read)[0]
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise BagError(f"OpenCV cannot open video {str(video)!r} (unknown container or codec)")
    try:
        rate = float(fps) if fps is not None else float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if rate not in FPS:
            what = f"fps={fps!r}" if fps is not None else f"video {str(video)!r} reports frame rate {rate!r}"
            raise BagError(f"{what}: the frame rate must be {FPS.describe()} (give it with --fps)")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if max_frames is not None:
            total = min(total, max_frames) if total > 0 else max_frames
        start = int(video.stat().st_mtime) * 1_000_000_000 if start_ns is None else int(start_ns)
        _check_stamps(start, total, rate)
        stamps: list[int] = []
        width = height = 0
        from tqdm import tqdm

        with ImageBagWriter(bag, topic, storage, compression=compression, encoding=encoding,
                            frame_id=frame_id, overwrite=overwrite, version=bag_version, inputs=read) as writer, \
                tqdm(total=total or None, unit="frame", desc=video.name, disable=not progress) as bar:
            while max_frames is None or len(stamps) < max_frames:
                ok, image = capture.read()
                if not ok or image is None:
                    break
                if image.ndim == 2:
                    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
                height, width = image.shape[:2]
                stamp = start + round(len(stamps) * 1e9 / rate)
                if stamp > LAST_STAMP_NS:  # more frames than the container announced
                    _check_stamps(start, len(stamps) + 1, rate)
                writer.write(image, stamp)
                stamps.append(stamp)
                bar.update(1)
            msgtype = writer.msgtype
    finally:
        capture.release()
    if not stamps:
        raise BagError(f"no frame could be decoded from video {str(video)!r}")
    if total and len(stamps) < total:
        log.warning("%s: the container announces %d frames, %d could be decoded", video, total, len(stamps))
    result = VideoToBagResult(video, bag, topic, storage, msgtype, len(stamps), rate, width, height,
                              np.asarray(stamps, dtype=np.int64))
    if labels is not None and csv_path is not None:
        with Staging(csv_path, "labels CSV", replace=replace_csv) as staging, write_faults(csv_path, "labels CSV"):
            write_stamp_csv(staging.path, result.stamps_ns, labels)
            result.labels_csv = staging.commit()
    return result
