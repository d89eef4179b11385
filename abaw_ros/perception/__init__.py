"""ROS-free perception: face detection (BlazeFace, MTCNN, YuNet, Haar), tracking, alignment, per-face
feature buffers and the :class:`PerceptionPipeline` that the node and the offline tools
share. Never imports ROS; see docs/PERCEPTION.md."""
from abaw_ros.perception.alignment import align_face, similarity_transform, template
from abaw_ros.perception.detection import FaceDetection, FaceDetector, LandmarkStage
from abaw_ros.perception.detectors import create_detector
from abaw_ros.perception.pipeline import FaceResult, FrameResult, PerceptionPipeline
from abaw_ros.perception.tracking import FaceTracker, Track

__all__ = [
    "FaceDetection",
    "FaceDetector",
    "FaceResult",
    "FaceTracker",
    "LandmarkStage",
    "FrameResult",
    "PerceptionPipeline",
    "Track",
    "align_face",
    "create_detector",
    "similarity_transform",
    "template",
]
