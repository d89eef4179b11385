"""One line saying what a network's weights come from (no torch: the node and the
ONNX-only runtime import it). The ``provenance`` dict is written by training
(:mod:`abaw_ros.training.provenance`) and :mod:`abaw_ros.models.reference`, stored in
checkpoints and copied into the exported bundles' metadata."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["provenance_summary"]


def provenance_summary(trained: bool, provenance: Mapping[str, Any] | None) -> str:
    """One short line saying what a network's weights come from, for logs and the node:
    ``"untrained (random weights)"``, ``"trained on generated fixtures (...)"``,
    ``"trained on data <roots> (...)"``, ``"imported from reference checkpoint ..."``."""
    prov = dict(provenance or {})
    if not trained:
        return "untrained (random weights): outputs are meaningless"
    if prov.get("source") == "reference":
        where = Path(str(prov.get("reference_checkpoint", "?"))).name
        epoch = f", epoch {prov['epoch']}" if "epoch" in prov else ""
        return f"imported from reference checkpoint {where}{epoch}"
    if not prov:
        return "trained (no provenance recorded)"
    roots = ", ".join(str(v) for v in (prov.get("data") or {}).values() if v)
    what = "generated fixtures" if prov.get("fixture") else (f"data {roots}" if roots else "unrecorded data")
    details = [f"tasks {','.join(prov['tasks'])}" if prov.get("tasks") else "",
               f"protocol {prov['protocol']}" if prov.get("protocol") else "",
               f"commit {str(prov['git_commit'])[:10]}" if prov.get("git_commit") else ""]
    details = [d for d in details if d]
    return f"trained on {what}" + (f" ({'; '.join(details)})" if details else "")
