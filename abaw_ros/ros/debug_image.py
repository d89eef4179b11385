"""``~/debug_image``: the camera frame with each face's box, id and main values drawn."""
from __future__ import annotations

import numpy as np

from abaw_ros.msg import FaceAffectArray


def draw_affect(image_bgr: np.ndarray, msg: FaceAffectArray, note: str = "") -> np.ndarray:
    """A copy of the image with each face's box, id and main values drawn, and ``note``
    in the top-left corner."""
    import cv2

    canvas = image_bgr.copy()
    if note:
        cv2.putText(canvas, note, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(canvas, note, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1, cv2.LINE_AA)
    for face in msg.faces:
        x, y, w, h = face.roi.x_offset, face.roi.y_offset, face.roi.width, face.roi.height
        cv2.rectangle(canvas, (x, y), (x + w, y + h), (0, 220, 0), 2)
        lines = [
            f"id {face.face_id} ({face.frames_observed}/{face.window_length})",
            f"V {face.valence:+.2f} A {face.arousal:+.2f}",
            f"hesitancy {face.hesitancy_probability:.2f}",
        ]
        for k, text in enumerate(lines):
            org = (x, max(12, y - 6 - 14 * (len(lines) - 1 - k)))
            cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 0), 1, cv2.LINE_AA)
    return canvas
