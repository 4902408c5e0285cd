"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds ``checkpoint-epochNNN.safetensors`` (model weights and
optimizer tensors) and ``checkpoint.json`` (recipe, seed, architecture, history,
optimizer hyper-parameters, and the weights file's SHA-256). The weights file is
written first under a new name, then the JSON is atomically replaced to point at
it, then older weight files are deleted — so a kill at any moment leaves the last
finished epoch resumable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from convscope.io import atomic_write_bytes, atomic_write_text, make_folders, to_json
from convscope.training.loop import EpochRecord, TrainState
from convscope.training.recipes import Recipe

CHECKPOINT_JSON = "checkpoint.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, inconsistent or does not fit the model."""


class CheckpointWriteError(RuntimeError):
    """The checkpoint could not be written (unwritable folder, full disk, ...);
    the previous checkpoint, if any, is still intact."""


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, param_id, key = name.split(".", 2)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, entries in meta.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    folder: Path, model: torch.nn.Module, state: TrainState, *, recipe: Recipe, seed: int, extra: dict[str, Any]
) -> Path:
    """Write the checkpoint for ``state.epochs_done`` into ``folder``; returns the JSON path.

    Raises:
        CheckpointWriteError: the folder or a file could not be written, or the
            weights are not finite; the previous checkpoint (if any) is left as it was.
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # never let a diverged model replace the last good checkpoint
        raise CheckpointWriteError(f"refusing to checkpoint epoch {state.epochs_done}: non-finite weights in {', '.join(bad)}")
    optim_tensors, optim_meta = _flatten_optimizer(state.optimizer_state or {"state": {}, "param_groups": []})
    tensors.update(optim_tensors)
    payload = st_save(tensors)
    weights_name = f"checkpoint-epoch{state.epochs_done:03d}.safetensors"
    meta = {
        "format": "convscope-checkpoint/1",
        "epochs_done": state.epochs_done,
        "recipe": recipe.to_dict(),
        "seed": seed,
        "weights_file": weights_name,
        "weights_sha256": hashlib.sha256(payload).hexdigest(),
        "optimizer": optim_meta,
        "history": [dataclasses.asdict(record) for record in state.history],
        "lr_history": state.lr_history,
        **extra,
    }
    try:
        make_folders(folder)  # (tracked: a front end may remove a folder it made for nothing)
        atomic_write_bytes(folder / weights_name, payload)
        # only now does the JSON point at the new weights (a leftover weights file of a
        # failed attempt is removed by the next successful save)
        json_path = atomic_write_text(folder / CHECKPOINT_JSON, to_json(meta))
    except OSError as exc:
        raise CheckpointWriteError(f"cannot write the checkpoint of epoch {state.epochs_done} to {folder}: {exc}") from exc
    for old in folder.glob("checkpoint-epoch*.safetensors"):
        if old.name != weights_name:
            old.unlink(missing_ok=True)
    return json_path


class Checkpointer:
    """An ``on_epoch_end`` callback for :func:`convscope.training.train` that writes
    the checkpoint of every finished epoch into ``folder`` (see :func:`save_checkpoint`).

    Example::

        recipe = get_recipe("fast")
        train(model, train_split, test_split, recipe, seed=0,
              on_epoch_end=[Checkpointer(Path("runs/nb/checkpoint"), recipe=recipe, seed=0), EpochPlot(recipe)])
    """

    def __init__(self, folder: Path, *, recipe: Recipe, seed: int, extra: dict[str, Any] | None = None) -> None:
        self.folder, self.recipe, self.seed, self.extra = Path(folder), recipe, seed, dict(extra or {})

    def __call__(self, state: TrainState, model: torch.nn.Module, _optimizer: Any = None) -> None:
        save_checkpoint(self.folder, model, state, recipe=self.recipe, seed=self.seed, extra=self.extra)


def load_checkpoint(folder: Path, model: torch.nn.Module) -> tuple[TrainState, dict[str, Any]]:
    """Restore ``model``'s weights from ``folder``; returns the train state and the JSON metadata.

    Raises:
        CheckpointError: no checkpoint, hash mismatch, or weights that do not fit.
    """
    json_path = folder / CHECKPOINT_JSON
    if not json_path.is_file():
        raise CheckpointError(f"no checkpoint in {folder} (expected {CHECKPOINT_JSON}); start without --resume")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        weights_path = folder / meta["weights_file"]
        payload = weights_path.read_bytes()
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{json_path}: unreadable checkpoint ({exc})") from exc
    if hashlib.sha256(payload).hexdigest() != meta["weights_sha256"]:
        raise CheckpointError(f"{weights_path}: content does not match {json_path.name}; the checkpoint is damaged")
    tensors = st_load(payload)
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights_path} does not fit the model: {exc}") from exc
    state = TrainState(
        epochs_done=int(meta["epochs_done"]),
        optimizer_state=_unflatten_optimizer(tensors, meta["optimizer"]),
        history=[EpochRecord(**record) for record in meta["history"]],
        lr_history=list(meta["lr_history"]),
    )
    return state, meta
