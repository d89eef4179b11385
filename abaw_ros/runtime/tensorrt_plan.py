"""Which TensorRT engines a bundle gets, in which precision, for which shapes.

Decided from the bundle and the options alone (no TensorRT needed, so it is tested on
machines without a GPU). One temporal-head path on every backend: a bundle with the
streaming graphs gets three engines,

- ``encoder``: crops -> feature maps, once per face per frame;
- ``projection`` (``frame_projection.onnx``): one frame's maps -> its tubelet-embedding
  projections, right after the encoder, same batch;
- ``tubelet_head`` (``tubelet_head.onnx``): tubelet sums of the faces that are due ->
  activated outputs;

and the fused ``temporal_head`` (whole windows of feature maps) is built only for a bundle
that holds no streaming graphs: one exported before them, or with ``abaw-affect export
--graphs encoder temporal_head``, which is how a user asks for the fused head.

Precision: the encoder in the backend's precision; the projection and the heads in the
head's (fp32 for fp32, fp16 for fp16 and int8: they are linear maps and small mixers
where fp16 keeps the outputs within the gate, and an int8 projection would need its own
calibration on encoder maps).

Profiles: one optimisation profile per engine, every input of it dynamic on the batch
axis only (TensorRT's Python API, ``IOptimizationProfile.set_shape(input, min, opt, max)``
for each dynamic input of the network: docs.nvidia.com/deeplearning/tensorrt/11.4.0/
_static/python-api/infer/Core/OptimizationProfile.html; the same in 10.x). Per-frame
graphs take 1..``max_batch_size`` crops (tuned for ``opt_batch_size``); the heads take
1..``max_windows`` windows (tuned for 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import BackendOptions
from .bundle import ModelBundle
from .engine_cache import InputProfile

__all__ = ["HEAD_PRECISION", "EngineStep", "engine_plan"]

# The precision the projection and the heads are built in, per backend precision.
HEAD_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int8": "fp16"}
PER_FRAME_GRAPHS = ("encoder", "projection")


@dataclass(frozen=True)
class EngineStep:
    """One engine to build (or take from the cache): ``graph`` name, the exported
    ``source`` graph, the ``precision`` it is built in and its input ``profiles``."""

    graph: str
    source: Path
    precision: str
    profiles: tuple[InputProfile, ...]

    @property
    def max_batch(self) -> int:
        """The most rows one call may carry (the profile's largest batch)."""
        return min(p.max[0] for p in self.profiles)


def engine_plan(bundle: ModelBundle, options: BackendOptions) -> tuple[EngineStep, ...]:
    """The engines ``bundle`` runs on TensorRT with ``options``: encoder + projection +
    tubelet head when it has the streaming graphs, encoder + fused temporal head otherwise."""
    head = HEAD_PRECISION[options.precision]
    if bundle.streams_tubelets:
        graphs = (("encoder", bundle.encoder, options.precision), ("projection", bundle.projection, head),
                  ("tubelet_head", bundle.tubelet_head, head))
    else:
        graphs = (("encoder", bundle.encoder, options.precision), ("temporal_head", bundle.temporal_head, head))
    steps = []
    for graph, source, precision in graphs:
        if source is None:  # not reached: streams_tubelets checked that both files exist
            raise FileNotFoundError(f"model bundle {bundle.directory} lacks the {graph} graph")
        if graph in PER_FRAME_GRAPHS:
            opt, most = min(options.opt_batch_size, options.max_batch_size), options.max_batch_size
        else:
            opt, most = 1, options.max_windows
        steps.append(EngineStep(graph, source, precision, InputProfile.for_onnx(source, opt, most)))
    return tuple(steps)
