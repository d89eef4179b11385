"""The detector registry: every face detector by name, built from the config.

Each detector module is imported only when its detector is chosen, so a missing optional
package (LiteRT for BlazeFace) never breaks the others. The names are those of
``config.DETECTORS`` (a test keeps the two equal).
"""
from __future__ import annotations

from collections.abc import Callable

from abaw_ros.config import PipelineConfig
from abaw_ros.perception.detection import FaceDetector


def _mtcnn(config: PipelineConfig) -> FaceDetector:
    from abaw_ros.perception.mtcnn import MTCNNDetector

    return MTCNNDetector(min_face_size=config.min_face_size, score_threshold=config.detection_threshold,
                         num_threads=config.num_threads)


def _blazeface(config: PipelineConfig) -> FaceDetector:
    from abaw_ros.perception.blazeface import BlazeFaceDetector

    return BlazeFaceDetector(config.blazeface_range, score_threshold=config.detection_threshold,
                             num_threads=config.num_threads)


def _yunet(config: PipelineConfig) -> FaceDetector:
    from abaw_ros.perception.yunet import YuNetDetector

    return YuNetDetector(config.detector_model_path, score_threshold=config.detection_threshold,
                         min_face_size=config.min_face_size)


def _haar(config: PipelineConfig) -> FaceDetector:
    from abaw_ros.perception.haar import HaarDetector

    return HaarDetector(min_face_size=config.min_face_size)


DETECTOR_FACTORIES: dict[str, Callable[[PipelineConfig], FaceDetector]] = {
    "blazeface": _blazeface,
    "mtcnn": _mtcnn,
    "yunet": _yunet,
    "haar": _haar,
}


def create_detector(config: PipelineConfig) -> FaceDetector:
    """The detector named by ``config.detector``, set up from the config."""
    factory = DETECTOR_FACTORIES.get(config.detector)
    if factory is None:
        raise ValueError(f"detector={config.detector!r}: must be one of {sorted(DETECTOR_FACTORIES)}")
    return factory(config)
