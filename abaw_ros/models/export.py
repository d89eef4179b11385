"""ONNX export: the model bundle directory that every runtime backend loads.

``export_onnx`` writes five graphs, all with a dynamic batch axis; the heads return
ACTIVATED outputs (VA in [-1, 1], the rest in [0, 1]):

==========================  =====================================  ============================
file                        inputs                                 outputs
==========================  =====================================  ============================
``encoder.onnx``            ``crops`` (N, 3, S, S) normalized      one (N, C, H, W) map per
                                                                   feature name
``frame_projection.onnx``   the encoder's maps, (N, C, H, W) per   ``<name>_projection``
                            feature name                           (N, pt, dim, h, w) per level
``tubelet_head.onnx``       ``<name>_tubelets`` (B, T/pt, dim,     ``outputs`` (B, D) window
                            h, w) per level                        mode, (B, T, D) frame mode
``temporal_head.onnx``      one (B, T, C, H, W) window per         ``outputs`` as above
                            feature name
``window.onnx``             ``clips`` (B, T, 3, S, S)              ``outputs`` as above
==========================  =====================================  ============================

Streaming runs encoder -> frame_projection per frame (each frame projected once by every
time slice of the tubelet-embedding weight, no bias), sums the projections per tubelet in
the ring buffer (:class:`abaw_ros.models.streaming.TubeletRingBuffer`) and runs
tubelet_head, which adds the bias and runs the rest of the mixers: the same outputs as
temporal_head on the window of maps, with the embedding cost per frame independent of T.
``temporal_head`` (whole windows of maps) stays for bundles' older readers and offline use.

T is fixed per export (the token-mixing MLP has T/4 * 49 inputs). Each file carries the
same JSON under ONNX ``metadata_props`` key ``abaw_ros`` (see :func:`build_metadata`), so a
bundle — or an engine built from it — explains itself.
"""
from __future__ import annotations

import copy
import io
import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from abaw_ros.model_metadata import GRAPH_FILES, METADATA_KEY, ModelMetadata
from abaw_ros.model_metadata import read_onnx_metadata as read_metadata
from abaw_ros.models.affect_net import AffectNet, activate
from abaw_ros.models.checkpoint import unwrap_model, validate_thresholds

__all__ = [
    "METADATA_KEY",
    "GRAPH_FILES",
    "DEFAULT_OPSET",
    "projection_names",
    "tubelet_names",
    "build_metadata",
    "model_metadata",
    "read_metadata",
    "export_onnx",
    "write_bundle",
    "is_our_bundle",
    "model_hash",
    "verify_bundle",
]

_logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17


def projection_names(feature_names) -> list[str]:
    """Output names of ``frame_projection.onnx``, one per level."""
    return [f"{name}_projection" for name in feature_names]


def tubelet_names(feature_names) -> list[str]:
    """Input names of ``tubelet_head.onnx``, one per level."""
    return [f"{name}_tubelets" for name in feature_names]


class _EncoderGraph(nn.Module):
    def __init__(self, model: AffectNet) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.encoder(crops))


class _TemporalHeadGraph(nn.Module):
    def __init__(self, model: AffectNet) -> None:
        super().__init__()
        self.head = model.head
        self.tasks = model.cfg.tasks

    def forward(self, *windows: torch.Tensor) -> torch.Tensor:
        return activate(self.head(list(windows)), self.tasks)


class _ProjectionGraph(nn.Module):
    def __init__(self, model: AffectNet) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, *maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.head.project_frames(list(maps)))


class _TubeletHeadGraph(nn.Module):
    def __init__(self, model: AffectNet) -> None:
        super().__init__()
        self.head = model.head
        self.tasks = model.cfg.tasks

    def forward(self, *sums: torch.Tensor) -> torch.Tensor:
        return activate(self.head.forward_tubelets(list(sums)), self.tasks)


class _WindowGraph(nn.Module):
    def __init__(self, model: AffectNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model.activate(self.model(clips))


BUNDLE_MANIFEST = "bundle.json"
BUNDLE_FORMAT = "abaw_ros.bundle"


def model_hash(model: nn.Module) -> str:
    """SHA-256 of the model's config and weights: every graph of one export carries the
    same value, so graphs of two models put in one folder are told apart at load."""
    import hashlib

    net = unwrap_model(model)
    digest = hashlib.sha256(json.dumps(net.cfg.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_metadata(
    model: nn.Module,
    *,
    thresholds: Mapping[str, Any] | None = None,
    trained: bool = False,
    provenance: Mapping[str, Any] | None = None,
    weights_hash: str | None = None,
) -> ModelMetadata:
    """The metadata of ``model`` (:mod:`abaw_ros.model_metadata`): what every exported
    graph carries and what a checkpoint-backed backend reports."""
    model = unwrap_model(model)
    cfg = model.cfg
    th = validate_thresholds((thresholds or {}).get("au_thresholds"), (thresholds or {}).get("ah_threshold"))
    return ModelMetadata(
        tasks=tuple(cfg.tasks),
        window_length=cfg.window_length,
        input_size=cfg.input_size,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        feature_names=tuple(cfg.feature_names),
        feature_shapes=tuple(tuple(s) for s in model.feature_shapes),
        output_mode=cfg.output_mode,
        output_names=tuple(cfg.output_names),
        au_thresholds=tuple(th["au_thresholds"]),
        ah_threshold=th["ah_threshold"],
        trained=bool(trained),
        config=cfg.to_dict(),
        time_patch_size=cfg.time_patch_size,
        projection_shapes=tuple(tuple(s) for s in model.head.projection_shapes),
        provenance=dict(provenance or {}),
        model_hash=weights_hash or model_hash(model),
    )


def build_metadata(model: nn.Module, *, graph: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """The JSON stored with exported graph ``graph`` (:meth:`ModelMetadata.to_stored`);
    keywords as :func:`model_metadata`."""
    return model_metadata(model, **kwargs).to_stored(graph)


def _attach_metadata(path: Path, metadata: Mapping[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, input_names: list[str],
            output_names: list[str], batch_axes: dict[str, int], opset: int) -> None:
    dynamic_axes = {name: {axis: "batch"} for name, axis in batch_axes.items()}
    with warnings.catch_warnings():
        # the input-shape checks in forward() are constants for a fixed-T graph
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The TorchScript exporter is deprecated in favour of torch.export, but it exports
        # these graphs in under a second with plain dynamic batch axes; the torch.export
        # path takes ~10x longer here and needs per-input Dim specs for *args graphs.
        warnings.simplefilter("ignore", DeprecationWarning)
        graph = io.BytesIO()  # written by Python below: a disk fault is an OSError naming its cause
        torch.onnx.export(
            module.eval(),
            args,
            graph,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    path.write_bytes(graph.getvalue())


def export_onnx(
    model: nn.Module,
    out_dir: str | Path,
    thresholds: Mapping[str, Any] | None = None,
    trained: bool = False,
    *,
    opset: int = DEFAULT_OPSET,
    graphs: tuple[str, ...] = tuple(GRAPH_FILES),
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the model bundle to ``out_dir``; returns ``{graph: path}`` for the requested
    ``graphs`` (all of :data:`GRAPH_FILES` by default).

    ``thresholds``: ``{"au_thresholds": [12 floats], "ah_threshold": float}`` (the
    ``thresholds`` entry of ``load_checkpoint``'s info); defaults 0.5. ``provenance``: the
    checkpoint's (what the weights were trained on), stored in the metadata.
    """
    if opset < 17:
        raise ValueError(f"opset={opset}: must be >= 17 (LayerNormalization)")
    unknown = [g for g in graphs if g not in GRAPH_FILES]
    if unknown:
        raise ValueError(f"graphs {unknown}: choose from {list(GRAPH_FILES)}")
    validate_thresholds((thresholds or {}).get("au_thresholds"), (thresholds or {}).get("ah_threshold"))
    # export a CPU eval copy: the caller's model keeps its device and mode
    net = copy.deepcopy(unwrap_model(model)).cpu().eval()
    cfg = net.cfg
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    s, t, batch = cfg.input_size, cfg.window_length, 2
    names = list(cfg.feature_names)
    paths: dict[str, Path] = {}
    weights_hash = model_hash(net)
    with torch.no_grad():
        for graph in graphs:
            path = out_dir / GRAPH_FILES[graph]
            if graph == "encoder":
                _export(_EncoderGraph(net), (torch.zeros(batch, 3, s, s),), path, ["crops"], names,
                        {"crops": 0, **dict.fromkeys(names, 0)}, opset)
            elif graph == "projection":
                maps = tuple(torch.zeros(batch, *shape) for shape in net.feature_shapes)
                outs = projection_names(names)
                _export(_ProjectionGraph(net), maps, path, names, outs,
                        {**dict.fromkeys(names, 0), **dict.fromkeys(outs, 0)}, opset)
            elif graph == "tubelet_head":
                sums = tuple(torch.zeros(batch, *shape) for shape in net.head.tubelet_shapes)
                ins = tubelet_names(names)
                _export(_TubeletHeadGraph(net), sums, path, ins, ["outputs"],
                        {**dict.fromkeys(ins, 0), "outputs": 0}, opset)
            elif graph == "temporal_head":
                windows = tuple(torch.zeros(batch, t, *shape) for shape in net.feature_shapes)
                _export(_TemporalHeadGraph(net), windows, path, names, ["outputs"],
                        {**dict.fromkeys(names, 0), "outputs": 0}, opset)
            else:
                _export(_WindowGraph(net), (torch.zeros(batch, t, 3, s, s),), path, ["clips"], ["outputs"],
                        {"clips": 0, "outputs": 0}, opset)
            _attach_metadata(path, build_metadata(net, graph=graph, thresholds=thresholds, trained=trained,
                                                  provenance=provenance, weights_hash=weights_hash))
            paths[graph] = path
            _logger.info("wrote %s", path)
    _write_manifest(out_dir, weights_hash, paths)
    return paths


def _write_manifest(out_dir: Path, weights_hash: str, paths: Mapping[str, Path]) -> None:
    """``bundle.json``: the model every graph comes from and the SHA-256 of each file."""
    import hashlib

    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths.values()}
    manifest = {"format": BUNDLE_FORMAT, "version": 1, "model_hash": weights_hash, "files": files}
    (out_dir / BUNDLE_MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def is_our_bundle(path: Path) -> bool:
    """True when ``path`` is a bundle folder written by export: its manifest, and nothing
    but the files the manifest names (so replacing it deletes nothing else)."""
    try:
        manifest = json.loads((path / BUNDLE_MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            return False
        own = {str(name) for name in manifest["files"]} | {BUNDLE_MANIFEST}
        return all(entry.name in own and entry.is_file() and not entry.is_symlink() for entry in path.iterdir())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_bundle(
    model: nn.Module,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    inputs: tuple[str | Path, ...] = (),
    **kwargs: Any,
) -> dict[str, Path]:
    """:func:`export_onnx` as a whole bundle: checked first (an existing folder is replaced
    only when it is a bundle written by export and ``overwrite``; never an input), written
    beside ``out_dir`` and moved there complete, so a bundle never holds graphs of two
    models. Returns ``{graph: path}`` under ``out_dir``. Refusals and disk faults raise
    :class:`abaw_ros.outputs.OutputError` (one line)."""
    from abaw_ros.outputs import Output, Staging, check_outputs, write_faults

    out_dir = Path(out_dir)
    replace = check_outputs([Output(out_dir, "bundle", is_our_bundle, folder=True, written_by="export (no "
                                    f"{BUNDLE_MANIFEST} naming every file)")], overwrite, inputs)[0]
    with Staging(out_dir, "bundle", replace=replace) as staging:
        with write_faults(out_dir, "bundle"):
            staging.path.mkdir()
            paths = export_onnx(model, staging.path, **kwargs)
        staging.commit()
    return {graph: out_dir / path.name for graph, path in paths.items()}


def verify_bundle(model: nn.Module, paths: Mapping[str, Path], batch: int = 2, seed: int = 0) -> dict[str, float]:
    """Run every exported graph in ONNX Runtime and PyTorch on the same random inputs.

    Returns, per graph, the largest difference: absolute for the activated outputs
    (``tubelet_head``, ``temporal_head``, ``window``), relative to the largest magnitude
    for the encoder maps and the projections (their scale depends on the weights).
    """
    import numpy as np
    import onnxruntime as ort

    net = copy.deepcopy(unwrap_model(model)).cpu().eval()
    cfg = net.cfg
    gen = torch.Generator().manual_seed(seed)
    s, t = cfg.input_size, cfg.window_length
    errors: dict[str, float] = {}
    with torch.no_grad():
        for graph, path in paths.items():
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            if graph == "encoder":
                crops = torch.randn(batch, 3, s, s, generator=gen)
                ref = [m.numpy() for m in net.encoder(crops)]
                got = session.run(None, {"crops": crops.numpy()})
                errors[graph] = max(
                    float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-12)) for g, r in zip(got, ref, strict=True)
                )
            elif graph == "projection":
                maps = [torch.randn(batch, *shape, generator=gen) for shape in net.feature_shapes]
                ref = [p.numpy() for p in net.head.project_frames(maps)]
                got = session.run(None, {name: m.numpy() for name, m in zip(cfg.feature_names, maps, strict=True)})
                errors[graph] = max(
                    float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-12)) for g, r in zip(got, ref, strict=True)
                )
            elif graph == "tubelet_head":
                sums = [torch.randn(batch, *shape, generator=gen) for shape in net.head.tubelet_shapes]
                ref_out = net.activate(net.head.forward_tubelets(sums)).numpy()
                feeds = {name: x.numpy() for name, x in zip(tubelet_names(cfg.feature_names), sums, strict=True)}
                errors[graph] = float(np.abs(session.run(None, feeds)[0] - ref_out).max())
            elif graph == "temporal_head":
                windows = [torch.randn(batch, t, *shape, generator=gen) for shape in net.feature_shapes]
                ref_out = net.activate(net.head(windows)).numpy()
                feeds = {name: w.numpy() for name, w in zip(cfg.feature_names, windows, strict=True)}
                errors[graph] = float(np.abs(session.run(None, feeds)[0] - ref_out).max())
            else:
                clips = torch.randn(batch, t, 3, s, s, generator=gen)
                ref_out = net.activate(net(clips)).numpy()
                errors[graph] = float(np.abs(session.run(None, {"clips": clips.numpy()})[0] - ref_out).max())
    return errors
