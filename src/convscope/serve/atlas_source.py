"""OIPs and top-k examples from an atlas that was already built (``convscope serve
--atlas DIR``): the stage results stored in ``DIR/.stages`` by
:class:`convscope.report.cache.StageCache`, read back through its codec, so the
explorer shows the atlas' own pictures instead of computing them again.

Only an atlas of the same model is used: ``DIR/atlas.json`` records the SHA-256 of
the model's tensors and spec (:func:`convscope.report.build.model_sha256`), and a
different model is refused with a note (the explorer then computes on demand).
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn


class AtlasSource:
    """The stored stages of one atlas folder.

    Args:
        folder: the atlas output folder (``index.html``, ``atlas.json``, ``.stages``).
        model: the explorer's model (its hash must match the atlas').
    """

    def __init__(self, folder: Path, model: nn.Module) -> None:
        from convscope.report.build import model_sha256
        from convscope.report.cache import StageCache

        self.folder = Path(folder)
        self.cache = StageCache(self.folder / ".stages")
        self.note = ""
        self.usable = False
        self._records: dict[str, tuple[float, str]] = {}
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()
        summary = self.folder / "atlas.json"
        try:
            recorded = json.loads(summary.read_text(encoding="utf-8"))["provenance"]["model_sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            self.note = f"{self.folder} holds no atlas.json (build one with convscope report --out {self.folder})"
            return
        if recorded != model_sha256(model):
            self.note = (f"the atlas in {self.folder} was built for another model (or other weights); its OIPs and "
                         "top-k examples are not used")
            return
        for path in sorted((self.folder / ".stages").glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                name, key = str(record["stage"]), str(record["key"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if "@" in name:
                continue  # chunks: their merged stage holds everything
            stamp = path.stat().st_mtime
            if name not in self._records or stamp > self._records[name][0]:
                self._records[name] = (stamp, key)
        self.usable = True
        self.note = f"OIPs and top-k examples from the atlas in {self.folder}"

    def describe(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "usable": self.usable, "note": self.note,
                "oip_layers": sorted(name.split(":", 1)[1] for name in self._records if name.startswith("oip:")),
                "topk": "topk" in self._records}

    def _stage(self, name: str) -> Any:
        if not self.usable or name not in self._records:
            return None
        with self._lock:
            if name not in self._loaded:
                stored = self.cache.load(name, self._records[name][1])
                self._loaded[name] = None if stored is None else stored[0]
            return self._loaded[name]

    def oip(self, layer: str, index: int) -> dict[str, Any] | None:
        """The stored OIP of map ``index`` of ``layer`` (a :class:`convscope.report.stages.LayerOIPs`):
        its picture (PNG data URI), evolution strip, final objective and state; ``None`` if not stored."""
        from convscope.report.stages import OIP_SCALE

        oips = self._stage(f"oip:{layer}")
        if oips is None or not 0 <= index < oips.maps or f"oip/{index}" not in oips.images:
            return None
        out = {"source": "atlas", "png": _uri(oips.images[f"oip/{index}"]), "state": oips.state(index),
               "status": oips.status[index], "start": oips.source[index],
               "final": float(oips.arrays["final_loss"][index]), "scale": list(OIP_SCALE),
               "params": {k: oips.params.get(k) for k in ("steps", "epsilon", "candidates") if k in oips.params}}
        if f"evo/{index}" in oips.images:
            out["evolution"] = _uri(oips.images[f"evo/{index}"])
            out["evolution_steps"] = list(oips.snapshot_steps)
        return out

    def topk(self, layer: str) -> dict[str, Any] | None:
        """The stored top-k of ``layer`` (a :class:`convscope.report.stages.TopK`): ``{"indices" (M, k),
        "values", "rects" or None, "num_images", "source"}``; ``None`` if not stored."""
        top = self._stage("topk")
        if top is None or f"indices/{layer}" not in top.arrays:
            return None
        rects = top.arrays.get(f"rects/{layer}")
        return {"source": "atlas", "indices": np.asarray(top.indices(layer)), "values": np.asarray(top.values(layer)),
                "rects": None if rects is None else np.asarray(rects), "num_images": int(top.num_images)}


def _uri(data: bytes) -> str:
    kind = "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png"
    return f"data:{kind};base64," + base64.b64encode(data).decode("ascii")


__all__ = ["AtlasSource"]
