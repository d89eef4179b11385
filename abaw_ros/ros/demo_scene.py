"""Synthetic camera frames with real faces, for the demo, the node tests and the benchmark.

A head-and-shoulders crop of ``skimage.data.astronaut()`` (a real photograph) is pasted
onto a plain background, moving and changing scale from frame to frame, so the detector,
the tracker and the temporal windows see what a camera would give them. ``faces`` copies
are laid out side by side (0 gives a scene without a face).
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

# Head and shoulders of the astronaut (x0, y0, x1, y1) in the 512x512 picture; the face
# itself spans roughly x 175..265, y 60..165.
_PORTRAIT_BOX = (96, 0, 352, 288)


@lru_cache(maxsize=1)
def portrait_bgr() -> np.ndarray:
    """The head-and-shoulders crop of the astronaut picture, BGR uint8 (288x256)."""
    from skimage import data

    x0, y0, x1, y1 = _PORTRAIT_BOX
    rgb = data.astronaut()[y0:y1, x0:x1]
    return np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _background(width: int, height: int) -> np.ndarray:
    """A smooth grey-blue gradient: nothing a face detector would fire on."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    base = 90.0 + 60.0 * ys + 30.0 * xs
    image = np.stack([base + 25.0, base + 10.0, base], axis=-1)
    return np.clip(image, 0, 255).astype(np.uint8)


class DemoScene:
    """Frame ``i`` of a scene with ``faces`` moving portraits (0, 1, 2, 3 or 4).

    The motion repeats every ``period`` frames (16 s at 15 Hz): slow enough that a node
    which can only process a few frames per second still tracks the faces.
    """

    def __init__(self, faces: int = 1, width: int = 640, height: int = 480, period: int = 240) -> None:
        if faces not in (0, 1, 2, 3, 4):
            raise ValueError(f"faces={faces}: choose 0, 1, 2, 3 or 4")
        if width < 160 or height < 120:
            raise ValueError(f"frame size {width}x{height}: must be at least 160x120")
        self.faces, self.width, self.height, self.period = faces, width, height, max(int(period), 2)
        self._background = _background(width, height)
        self._portrait = portrait_bgr()
        # One cell per face: a single face uses the whole frame, more faces share it.
        columns = {0: 1, 1: 1, 2: 2, 3: 3, 4: 2}[faces]
        rows = 2 if faces == 4 else 1
        self._cells = [
            (c * width // columns, r * height // rows, width // columns, height // rows)
            for r in range(rows) for c in range(columns)
        ][: faces]

    def portrait_boxes(self, index: int) -> list[tuple[int, int, int, int]]:
        """Where frame ``index`` shows each portrait: (x, y, w, h) in pixels."""
        phase = 2.0 * math.pi * (index % self.period) / self.period
        ph, pw = self._portrait.shape[:2]
        boxes = []
        for k, (cx, cy, cw, ch) in enumerate(self._cells):
            # The portrait fills 60..85% of its cell's height and drifts inside the cell.
            fill = 0.725 + 0.125 * math.sin(phase + k)
            scale = min(fill * ch / ph, 0.95 * cw / pw)
            w, h = max(int(pw * scale), 8), max(int(ph * scale), 8)
            x = cx + int((cw - w) * (0.5 + 0.35 * math.sin(phase + 1.3 * k)))
            y = cy + int((ch - h) * (0.5 + 0.35 * math.cos(2.0 * phase + 0.7 * k)))
            boxes.append((x, y, w, h))
        return boxes

    def frame(self, index: int) -> np.ndarray:
        """BGR uint8 ``(height, width, 3)``."""
        image = self._background.copy()
        for x, y, w, h in self.portrait_boxes(index):
            image[y : y + h, x : x + w] = cv2.resize(self._portrait, (w, h), interpolation=cv2.INTER_AREA)
        return image


class VideoScene:
    """Frames of a video file (looped), resized to ``width`` x ``height`` when given."""

    def __init__(self, path: str | Path, width: int | None = None, height: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"video file {str(self.path)!r}: no such file")
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            raise ValueError(f"video file {str(self.path)!r}: OpenCV cannot open it")
        self.size = (width, height) if width and height else None
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)

    def frame(self, index: int) -> np.ndarray:  # noqa: ARG002 - frames come in file order
        ok, image = self._capture.read()
        if not ok:  # end of file: start again
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._capture.read()
            if not ok:
                raise ValueError(f"video file {str(self.path)!r}: no frame could be read")
        if self.size is not None and (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        return image

    def close(self) -> None:
        self._capture.release()
