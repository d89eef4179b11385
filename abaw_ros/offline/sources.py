"""Frames from a video file, an image folder or a bag: the sources of the offline frame
loop (:mod:`abaw_ros.offline.frame_loop`; ``predict`` takes all three, ``bag-eval`` bags).

- **video**: any file OpenCV reads; frame ``i`` is at ``i / fps`` seconds (the file's
  rate, or ``fps``);
- **image folder**: the images in natural order (``2.jpg`` before ``10.jpg``), frame ``i``
  at ``i / fps`` seconds (``fps`` default 30); a file that cannot be decoded is a frame
  with ``image=None`` and the reason;
- **bag**: the frames of one image topic (:class:`~abaw_ros.offline.bag_reader.ImageBagReader`),
  time from the header stamps; broken frames come with ``image=None`` and the reason.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from abaw_ros.config import DEFAULT_MAX_IMAGE_PIXELS, FRAME_RATE, MAX_IMAGE_PIXELS_RANGE
from abaw_ros.perception.image import CorruptImageError, ImageTooLargeError, compressed_image_size

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
BAG_SUFFIXES: tuple[str, ...] = (".mcap", ".db3")
DEFAULT_IMAGE_FPS = 30.0  # Aff-Wild2's usual rate; image folders carry no rate of their own


class SourceError(ValueError):
    """The SOURCE cannot be read; the message names it and says what would work."""


# ---------------------------------------------------------------------------------------
# Frame sources
# ---------------------------------------------------------------------------------------
@dataclass
class SourceFrame:
    index: int  # 0-based position in the source, counting skipped frames too
    time_s: float  # seconds since the first frame
    stamp_ns: int
    image: np.ndarray | None  # BGR; None when the frame cannot be decoded
    name: str = ""  # file name (image folders)
    error: str | None = None
    unsupported: bool = False  # the encoding cannot be decoded at all (e.g. 16UC1 depth, h264)
    # bags: when the recorder received it, the header as recorded (stamp 0 when unknown)
    log_time_ns: int = 0
    header_stamp_ns: int = 0
    frame_id: str = ""


def natural_key(name: str) -> list[Any]:
    """Sort key that orders digit runs by value: ``2.jpg`` before ``10.jpg``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class FrameSource:
    """Base of the three sources: ``kind``, ``total`` (None when unknown), ``fps`` and
    :meth:`frames`; a context manager."""

    kind = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total: int | None = None
        self.fps: float | None = None

    def frames(self) -> Iterator[SourceFrame]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "frames_announced": self.total, "fps": self.fps}

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoSource(FrameSource):
    kind = "video"

    def __init__(self, path: Path, fps: float | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        super().__init__(path)
        self.max_pixels = max_pixels
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            self._capture.release()
            raise SourceError(f"SOURCE {str(path)!r}: OpenCV cannot open it as a video (unknown container or "
                              f"codec); give a video file, a folder of images or a ROS 2 bag")
        rate = float(fps) if fps is not None else float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if rate not in FRAME_RATE:
            self._capture.release()
            raise SourceError(f"SOURCE {str(path)!r} reports frame rate {rate!r}: give the rate with --fps "
                              f"({FRAME_RATE.describe()})")
        self.fps = rate
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total = count if count > 0 else None
        # The container's frame size, known before any frame is decoded.
        width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if width * height > max_pixels:
            self._capture.release()
            raise SourceError(f"SOURCE {str(path)!r}: frames of {width}x{height} = {width * height:,} pixels are "
                              f"larger than max_image_pixels={max_pixels:,} (raise it with -p "
                              f"max_image_pixels:=N, at most {MAX_IMAGE_PIXELS_RANGE[1]:,})")

    def frames(self) -> Iterator[SourceFrame]:
        index = 0
        while True:
            ok, image = self._capture.read()
            if not ok or image is None:
                return
            stamp = round(index * 1e9 / self.fps)
            height, width = image.shape[:2]
            if width * height > self.max_pixels:  # a container that announced a smaller size
                yield SourceFrame(index, stamp / 1e9, stamp, None, error=(
                    f"frame of {width}x{height} pixels is larger than max_image_pixels={self.max_pixels:,}"))
            else:
                yield SourceFrame(index, stamp / 1e9, stamp, image)
            index += 1

    def close(self) -> None:
        self._capture.release()


class ImageFolderSource(FrameSource):
    kind = "images"

    def __init__(self, path: Path, files: Sequence[Path], fps: float | None = None,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        super().__init__(path)
        self.files = sorted(files, key=lambda p: natural_key(p.name))
        self.fps = float(fps) if fps is not None else DEFAULT_IMAGE_FPS
        self.total = len(self.files)
        self.max_pixels = max_pixels

    def frames(self) -> Iterator[SourceFrame]:
        for index, file in enumerate(self.files):
            stamp = round(index * 1e9 / self.fps)
            try:
                image, error = read_image_file(file, self.max_pixels), None
            except (OSError, CorruptImageError) as exc:
                image, error = None, f"{file.name}: {exc}"
            yield SourceFrame(index, stamp / 1e9, stamp, image, file.name, error)


def read_image_file(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """A BGR image from a file, measured from its header first: one larger than
    ``max_pixels`` (a 389 KB PNG can declare 20000x20000 pixels, 1.2 GB decoded) raises
    :class:`ImageTooLargeError` unread, as a bag's compressed frame does."""
    data = np.fromfile(path, dtype=np.uint8)
    size = compressed_image_size(data)
    if size is None:
        raise CorruptImageError("no JPEG, PNG, WebP, BMP, TIFF or PNM header giving the image size: not decoded")
    width, height, kind = size
    if width * height > max_pixels:
        raise ImageTooLargeError(f"image of {width}x{height} = {width * height:,} pixels ({kind} header) is "
                                 f"larger than max_image_pixels={max_pixels:,}: not decoded")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise CorruptImageError("OpenCV cannot decode this image")
    if image.shape[0] * image.shape[1] > max_pixels:  # a header that lied about the size
        raise ImageTooLargeError(f"image decoded to {image.shape[1]}x{image.shape[0]} pixels, more than "
                                 f"max_image_pixels={max_pixels:,}")
    return image


class BagSource(FrameSource):
    """One image topic of a bag; :attr:`reader` (the
    :class:`~abaw_ros.offline.bag_reader.ImageBagReader`) tells the topic's type, the
    storage and what damage cost."""

    kind = "bag"

    def __init__(self, path: Path, topic: str | None, recover: bool = False,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        super().__init__(path)
        from abaw_ros.offline.bag_reader import ImageBagReader

        self.reader = ImageBagReader(path, topic, recover, max_pixels=max_pixels)
        self.reader.open()  # a bad bag or topic fails here, naming it
        self.topic = self.reader.topic
        self.total = self.reader.message_count

    def frames(self) -> Iterator[SourceFrame]:
        first: int | None = None
        for frame in self.reader.frames():
            first = frame.stamp_ns if first is None else first
            yield SourceFrame(frame.index, (frame.stamp_ns - first) / 1e9, frame.stamp_ns, frame.image,
                              error=frame.error, unsupported=frame.unsupported, log_time_ns=frame.log_time_ns,
                              header_stamp_ns=frame.header_stamp_ns, frame_id=frame.frame_id)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(topic=self.topic, damage=self.reader.damage)
        return info

    def close(self) -> None:
        self.reader.close()


def source_inputs(source: Path) -> list[Path]:
    """What a run reads, so that no output lands on it: the source, and the bag folder
    around a bag's storage file."""
    inputs = [source]
    if source.is_file() and (source.parent / "metadata.yaml").is_file():
        inputs.append(source.parent)
    return inputs


def open_source(path: str | Path, fps: float | None = None, topic: str | None = None,
                recover: bool = False, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> FrameSource:
    """The source ``path`` names: a bag (directory with ``metadata.yaml``, ``.mcap``,
    ``.db3``), a folder of images, or a video file. Raises :class:`SourceError` (or the
    bag reader's :class:`BagError`) naming the path when it is none of them. Frames larger
    than ``max_pixels`` (the node's ``max_image_pixels``) are skipped unread; a video whose
    frames all are is refused."""
    path = Path(path)
    if fps is not None and fps not in FRAME_RATE:
        raise SourceError(f"--fps {fps!r}: must be {FRAME_RATE.describe()}")
    if not path.exists():
        raise SourceError(f"SOURCE {str(path)!r} does not exist (give a video file, a folder of images or a "
                          f"ROS 2 bag)")
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            return BagSource(path, topic, recover, max_pixels)
        entries = [p for p in path.iterdir() if p.is_file()]
        images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        if images:
            return ImageFolderSource(path, images, fps, max_pixels)
        if len([p for p in entries if p.suffix in BAG_SUFFIXES]) == 1:
            return BagSource(path, topic, recover, max_pixels)  # a recording without metadata.yaml
        raise SourceError(f"SOURCE {str(path)!r} is a folder without images ({', '.join(IMAGE_SUFFIXES)}) and "
                          f"is not a ROS 2 bag (no metadata.yaml)")
    if path.suffix in BAG_SUFFIXES:
        return BagSource(path, topic, recover, max_pixels)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderSource(path.parent, [path], fps, max_pixels)
    return VideoSource(path, fps, max_pixels)
