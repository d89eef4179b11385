"""What the node does per camera frame, as a script: the perception pipeline with the
default detector (BlazeFace on LiteRT) and an exported ONNX bundle on ONNX Runtime, over the
images given, printing one JSON document (the versions that ran, the backend's precision
and every published face).

tests/test_offline_install.py runs it inside fresh venvs (the robot install, the oldest
versions we claim) and in the test environment, and compares the two.

    python robot_workload.py BUNDLE PRECISION IMAGE [IMAGE ...]
"""
from __future__ import annotations

import json
import platform
import sys
from importlib.metadata import version

import cv2

from abaw_ros.config import PipelineConfig
from abaw_ros.perception.pipeline import PerceptionPipeline

DISTRIBUTIONS = ("numpy", "opencv-python-headless", "onnxruntime", "ai-edge-litert")
FRAME_NS = 40_000_000


def main(argv: list[str]) -> int:
    bundle, precision, *images = argv
    # The node's defaults except what makes runs comparable: every frame goes through the
    # detector, and a face is published from its first frame.
    config = PipelineConfig(model_file_path=bundle, backend="onnxruntime", precision=precision,
                            detection_interval=1, track_min_hits=1, num_threads=1)
    pipeline = PerceptionPipeline(config)
    frames = []
    for i, path in enumerate(images):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{path}: not an image")
        result = pipeline.process(image, stamp_ns=i * FRAME_NS)
        frames.append([{"id": face.face_id, "box": list(face.box), "confidence": face.confidence,
                        "outputs": {task: values.tolist() for task, values in face.outputs.items()}}
                       for face in result.faces])
    json.dump({"python": platform.python_version(),
               "versions": {name: version(name) for name in DISTRIBUTIONS},
               "detector": pipeline.faces.detector.name, "backend": pipeline.backend.name,
               "precision": pipeline.backend.precision, "frames": frames}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
