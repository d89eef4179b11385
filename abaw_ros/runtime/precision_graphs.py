"""Reduced-precision ONNX graphs made from the exported fp32 graphs: the precision lives
in the graph, so every runtime that reads it (ONNX Runtime on CPU, TensorRT's strongly
typed networks) runs the same numbers.

- fp16: float16 weights and activations with fp32 inputs/outputs, and the ops that lose
  most in half precision (normalisations, reductions, softmax, exp/log/pow) kept in fp32.
  Converted with onnxconverter-common's ``convert_float_to_float16`` (``keep_io_types``,
  ``op_block_list``); NVIDIA ModelOpt's AutoCast
  (``modelopt.onnx.autocast.convert_to_mixed_precision``, the converter TensorRT 11's
  migration guide recommends) is used when onnxconverter-common is not installed.
- int8: static Q/DQ quantization with ONNX Runtime's quantizer, activation ranges from
  face crops. Two recipes: :data:`INT8_CPU` (uint8 asymmetric activations, what ONNX
  Runtime's CPU kernels are fastest with) and :data:`INT8_TENSORRT` (int8 symmetric
  activations and weights, fp32 bias: TensorRT's explicit quantization accepts only
  zero-point-0 int8 Q/DQ, see its "Explicit Quantization" guide and ONNX Runtime's
  "quantize to run on TensorRT" notes).

Each recipe has a ``describe()`` string that goes into the engine cache key, so a graph
made another way is never mistaken for this one.
"""
from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)

# Kept in fp32 by the fp16 conversion: LayerNorm and the ops it decomposes into, the
# token-mean, softmax and the exponentials. Everything else (convolutions, GEMMs, GELU,
# activations) runs in fp16.
FP16_KEEP_FP32_OPS: tuple[str, ...] = (
    "LayerNormalization", "ReduceMean", "ReduceSum", "ReduceL2", "Softmax", "LogSoftmax",
    "Pow", "Sqrt", "Reciprocal", "Exp", "Log",
)


@dataclass(frozen=True)
class Fp16Recipe:
    converter: str  # "onnxconverter-common <version>" or "modelopt-autocast <version>"
    keep_fp32_ops: tuple[str, ...] = FP16_KEEP_FP32_OPS

    def describe(self) -> str:
        return f"fp16 via {self.converter}, fp32 I/O, fp32 ops {','.join(self.keep_fp32_ops)}"


def fp16_recipe() -> Fp16Recipe:
    """The fp16 converter this machine has, or ValueError with the install hint."""
    try:
        import onnxconverter_common

        return Fp16Recipe(f"onnxconverter-common {onnxconverter_common.__version__}")
    except ImportError:
        pass
    try:
        import modelopt

        return Fp16Recipe(f"modelopt-autocast {getattr(modelopt, '__version__', '?')}")
    except ImportError:
        raise ValueError(
            "precision='fp16' needs an fp16 graph converter: `pip install onnxconverter-common` "
            "(or NVIDIA ModelOpt: `pip install nvidia-modelopt[onnx]`)"
        ) from None


def convert_fp16(fp32_path: Path, out_path: Path, recipe: Fp16Recipe | None = None) -> Path:
    """Write the mixed-precision fp16 version of ``fp32_path`` to ``out_path``."""
    import onnx

    recipe = recipe or fp16_recipe()
    if recipe.converter.startswith("onnxconverter-common"):
        from onnxconverter_common import float16

        with warnings.catch_warnings():  # one warning per weight below fp16's range; they are expected
            warnings.simplefilter("ignore", UserWarning)
            model = float16.convert_float_to_float16(
                _outputs_apart(_without_identities(onnx.load(str(fp32_path)))),
                keep_io_types=True,
                op_block_list=sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(recipe.keep_fp32_ops)),
            )
    else:  # pragma: no cover - ModelOpt is not installed on the development machines
        import modelopt.onnx.autocast as autocast

        model = autocast.convert_to_mixed_precision(
            onnx_path=str(fp32_path), low_precision_type="fp16", keep_io_types=True,
            op_types_to_exclude=list(recipe.keep_fp32_ops),
        )
    onnx.save(model, str(out_path))
    return out_path


def _without_identities(model):
    """Drop Identity nodes (the exporter's aliases of shared weights) by reading their
    input directly: the fp16 converter types an Identity of a weight fp16 even where its
    consumer stays fp32, which ONNX Runtime refuses (output type mismatch)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.output[0] not in outputs}

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    kept = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        node.input[:] = [resolve(i) for i in node.input]
    del graph.node[:]
    graph.node.extend(kept)
    return model


def _outputs_apart(model):
    """Give every graph output that other nodes also read (the encoder's feature maps
    feed the next stage) a value of its own behind an Identity: the fp16 converter casts
    graph outputs back to fp32 in place, which would hand the fp32 tensor to the fp16
    consumers (ONNX Runtime then refuses the graph: Conv bound to float and float16)."""
    import onnx

    graph = model.graph
    outputs = {o.name for o in graph.output}
    read = {name for node in graph.node for name in node.input}
    for name in sorted(outputs & read):
        inner = f"{name}__value"
        for node in graph.node:
            node.output[:] = [inner if o == name else o for o in node.output]
            node.input[:] = [inner if i == name else i for i in node.input]
        graph.node.append(onnx.helper.make_node("Identity", [inner], [name], name=f"{name}__output"))
    return model


@dataclass(frozen=True)
class Int8Recipe:
    """Settings of ONNX Runtime's ``quantize_static`` (QDQ format, MinMax calibration)."""

    name: str
    activation_type: str  # "QUInt8" | "QInt8"
    activation_symmetric: bool
    quantize_bias: bool

    def describe(self) -> str:
        import onnxruntime

        act = "u8" if self.activation_type == "QUInt8" else "s8"
        sym = " symmetric" if self.activation_symmetric else ""
        bias = "int32 bias" if self.quantize_bias else "fp32 bias"
        return (f"int8 qdq ({self.name}): {act}{sym} activations, s8 symmetric per-channel weights, {bias}, "
                f"minmax; onnxruntime {onnxruntime.__version__} quantizer")


INT8_CPU = Int8Recipe("cpu", "QUInt8", activation_symmetric=False, quantize_bias=True)
INT8_TENSORRT = Int8Recipe("tensorrt", "QInt8", activation_symmetric=True, quantize_bias=False)


def quantize_int8(
    fp32_path: Path, calibration: np.ndarray, out_path: Path, recipe: Int8Recipe = INT8_CPU, batch_size: int = 8
) -> Path:
    """Statically quantize ``fp32_path`` (QDQ) with activation ranges from
    ``calibration`` (preprocessed crops ``(N, 3, S, S)``, fed to the graph's only input)."""
    import onnxruntime as ort

    if len(calibration) == 0:
        raise ValueError("calibration holds no face crops")
    input_name = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    batches = [{input_name: np.ascontiguousarray(batch, np.float32)}
               for batch in np.array_split(calibration, max(1, len(calibration) // batch_size))]
    return quantize_int8_batches(fp32_path, batches, out_path, recipe)


def quantize_int8_batches(
    fp32_path: Path, batches: Sequence[dict[str, np.ndarray]], out_path: Path, recipe: Int8Recipe = INT8_CPU,
    pre_process: bool = True,
) -> Path:
    """Statically quantize ``fp32_path`` (QDQ, ``recipe``) with activation ranges from
    ``batches`` (input name -> array, one dict per calibration batch). ``pre_process``:
    shape inference and folding first (for graphs with more than a few nodes)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class BatchReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        source = fp32_path
        if pre_process:
            prepared = Path(tmp) / "prepared.onnx"
            try:  # shape inference + folding: better node coverage for the quantizer
                quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
                source = prepared
            except Exception as exc:  # the quantizer still works on the raw graph
                LOG.warning("quantization pre-processing skipped (%s)", exc)
        quantize_static(
            str(source),
            str(out_path),
            BatchReader(),
            quant_format=QuantFormat.QDQ,
            activation_type=getattr(QuantType, recipe.activation_type),
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={
                "ActivationSymmetric": recipe.activation_symmetric,
                "WeightSymmetric": True,
                "QuantizeBias": recipe.quantize_bias,
            },
        )
    _drop_unused_opsets(out_path)
    return out_path


def _drop_unused_opsets(path: Path) -> None:
    """The quantizer declares ONNX Runtime's own operator domains (com.microsoft, ...)
    whether or not a node uses them; other readers (TensorRT's parser) need only the
    domains the nodes use."""
    import onnx

    model = onnx.load(str(path))
    used = {node.domain or "" for node in model.graph.node} | {""}
    kept = [o for o in model.opset_import if (o.domain or "") in used]
    if len(kept) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(kept)
        onnx.save(model, str(path))


def float_types_of(path: Path, names: Sequence[str] | None = None) -> dict[str, int]:
    """ONNX element types of the graph inputs and outputs (``names``: only those)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    io = list(graph.input) + list(graph.output)
    return {v.name: v.type.tensor_type.elem_type for v in io if names is None or v.name in names}
