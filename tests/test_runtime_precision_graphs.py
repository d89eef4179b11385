"""The reduced-precision graphs TensorRT builds its fp16 and int8 engines from, run here in
ONNX Runtime on CPU: they must load, keep fp32 inputs/outputs, really be fp16 / symmetric
int8 inside, and agree with fp32 within the gate's tolerances on real faces. Tolerance of
the fp16 graphs: activated outputs within 2e-2 of fp32 (as the TensorRT fp16 engines),
feature maps cos >= 0.999."""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from abaw_ros.runtime import InputProfile, load_backend, preprocess_crops
from abaw_ros.runtime.accuracy import check_precision, compare_backends
from abaw_ros.runtime.precision_graphs import (
    FP16_KEEP_FP32_OPS,
    INT8_TENSORRT,
    convert_fp16,
    float_types_of,
    quantize_int8,
)
from abaw_ros.runtime.samples import lfw_face_crops


@pytest.fixture(scope="module")
def faces():
    crops = lfw_face_crops(200)
    return {"calibration": crops[:48], "evaluation": crops[100:148]}


@pytest.fixture(scope="module")
def fp32(model_bundle):
    return load_backend(model_bundle, "onnxruntime", "fp32", device="cpu")


def _initializer_types(model: onnx.ModelProto) -> set[int]:
    return {init.data_type for init in model.graph.initializer}


def test_fp16_graphs_run_in_onnxruntime_and_agree_with_fp32(model_bundle, tmp_path, fp32, faces):
    out = tmp_path / "fp16"
    out.mkdir()
    for graph in ("encoder", "temporal_head"):
        convert_fp16(model_bundle / f"{graph}.onnx", out / f"{graph}.onnx")
        converted = onnx.load(str(out / f"{graph}.onnx"))
        assert TensorProto.FLOAT16 in _initializer_types(converted)  # the weights really are fp16 ...
        assert set(float_types_of(out / f"{graph}.onnx").values()) == {TensorProto.FLOAT}  # ... the I/O fp32
    head = onnx.shape_inference.infer_shapes(onnx.load(str(out / "temporal_head.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in head.graph.value_info}
    types |= {i.name: i.data_type for i in head.graph.initializer}
    kept = [n for n in head.graph.node if n.op_type in FP16_KEEP_FP32_OPS]
    assert {n.op_type for n in kept} == {"LayerNormalization", "ReduceMean"}
    assert all(types.get(n.input[0]) == TensorProto.FLOAT for n in kept)  # LayerNorm and the token mean in fp32
    fp16 = load_backend(out, "onnxruntime", "fp32", device="cpu")
    report = compare_backends(fp32, fp16, preprocess_crops(faces["evaluation"], fp32.metadata))
    print(report.format())
    assert all(m.rel_l2 > 1e-5 for m in report.maps)  # computed in fp16, not a copy of fp32
    assert all(m.cosine_min > 0.999 for m in report.maps)
    assert report.max_output_error < 2e-2
    assert check_precision(report).passed


def test_tensorrt_int8_graph_is_symmetric_qdq_and_passes_the_gate(model_bundle, tmp_path, fp32, faces):
    out = tmp_path / "int8"
    out.mkdir()
    calibration = preprocess_crops(faces["calibration"], fp32.metadata)
    quantize_int8(model_bundle / "encoder.onnx", calibration, out / "encoder.onnx", INT8_TENSORRT)
    shutil.copy(model_bundle / "temporal_head.onnx", out / "temporal_head.onnx")
    model = onnx.load(str(out / "encoder.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    zero_points = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # TensorRT: int8, zp 0
    assert TensorProto.INT32 not in _initializer_types(model)  # bias stays fp32
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    int8 = load_backend(out, "onnxruntime", "fp32", device="cpu")
    report = compare_backends(fp32, int8, preprocess_crops(faces["evaluation"], fp32.metadata))
    print(report.format())
    assert all(m.rel_l2 > 1e-4 for m in report.maps)  # quantized
    assert check_precision(report).passed


def test_input_profiles_come_from_the_graph(model_bundle):
    (crops,) = InputProfile.for_onnx(model_bundle / "encoder.onnx", opt_batch=4, max_batch=16)
    assert crops.name == "crops" and crops.min[0] == 1 and crops.opt[0] == 4 and crops.max[0] == 16
    assert crops.min[1:] == crops.max[1:] == (3, 224, 224)
    head = InputProfile.for_onnx(model_bundle / "temporal_head.onnx", opt_batch=1, max_batch=8)
    assert [p.name for p in head] == ["stride32", "stride16", "stride8"]
    assert all(p.max[:2] == (8, 8) and p.min[0] == 1 for p in head)
