"""Make ``import timm`` work where torchvision's compiled ops do not match torch.

A CUDA build of torchvision beside a CPU build of torch cannot load its C++ ops, and
its Python side then fails at import with ``operator torchvision::nms does not exist``
(it registers fake kernels for ops whose schemas the missing library would define).
timm imports torchvision, so the network could not be built at all. Only when that exact
failure happens, the schemas are defined here (the ops stay unimplemented; this package
never calls them) and the import is retried. On a matching install nothing is done.
"""
from __future__ import annotations

import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keeps the definitions alive


def ensure_torchvision_importable() -> None:
    global _library
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as exc:
        if "torchvision::nms does not exist" not in str(exc):
            raise
    import torch.library

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)
    import torchvision  # noqa: F401,F811


def import_timm():
    """``import timm`` after :func:`ensure_torchvision_importable`."""
    ensure_torchvision_importable()
    import timm

    return timm
