"""Checkpoints in safetensors (no pickle), published atomically, verified by sha256 on resume.

A checkpoint is ``step_<n>.safetensors`` (every tensor of the training state, flattened) whose
safetensors metadata holds the JSON skeleton of the nested state (dicts, lists, numbers, RNG
states); its manifest ``step_<n>.json`` (bytes, sha256) is published after it. A checkpoint
counts only when its manifest exists and the file's hash matches it.
"""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, cast

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from jobs.atomic import publish_bytes, publish_json, sha256_file
from jobs.journal import CheckpointWritten
from jobs.paths import RunPaths


@dataclass
class TrainingState:
    """Everything needed to continue bit-identically from ``step``."""

    step: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    probes: dict[str, Any] = field(default_factory=dict)  # each probe's state (e.g. the previous gradient)


def capture_rng() -> dict[str, Any]:
    # legacy=True (the default) gives the tuple form: ("MT19937", keys, pos, has_gauss, gauss)
    numpy_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": numpy_state[1],
            "pos": numpy_state[2],
            "has_gauss": numpy_state[3],
            "gauss": numpy_state[4],
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        ("MT19937", numpy_state["keys"], numpy_state["pos"], numpy_state["has_gauss"], numpy_state["gauss"])
    )
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(paths: RunPaths, state: TrainingState) -> CheckpointWritten:
    tensors: dict[str, torch.Tensor] = {}
    tree = {
        "step": state.step,
        "model": state.model,
        "optimizer": state.optimizer,
        "rng": state.rng,
        "probes": state.probes,
    }
    skeleton = _flatten(tree, tensors)
    payload = save_safetensors(tensors, metadata={"skeleton": json.dumps(skeleton)})
    data_file = paths.checkpoint_file(state.step)
    sha256 = publish_bytes(data_file, payload)
    manifest = CheckpointWritten(
        step=state.step, path=str(data_file.relative_to(paths.run_dir)), bytes=len(payload), sha256=sha256
    )
    try:
        publish_json(
            paths.checkpoint_manifest(state.step),
            {"step": state.step, "bytes": len(payload), "sha256": sha256},
        )
    except OSError:
        if not paths.checkpoint_manifest(state.step).exists():  # without a manifest it never counts:
            with contextlib.suppress(OSError):  # give its space back (a full disk) for what the job says next
                data_file.unlink()
        raise
    return manifest


def load_checkpoint(data_file: Path, device: torch.device) -> TrainingState:
    payload = data_file.read_bytes()
    tensors = load_safetensors(payload)
    header_length = int.from_bytes(payload[:8], "little")
    metadata = json.loads(payload[8 : 8 + header_length])["__metadata__"]
    tree = _unflatten(json.loads(metadata["skeleton"]), tensors)
    tree["model"] = {name: tensor.to(device) for name, tensor in tree["model"].items()}
    probes = {label: _to_device(state, device) for label, state in tree.get("probes", {}).items()}
    return TrainingState(
        step=tree["step"], model=tree["model"], optimizer=tree["optimizer"], rng=tree["rng"], probes=probes
    )


def _to_device(node: Any, device: torch.device) -> Any:
    if isinstance(node, torch.Tensor):
        return node.to(device)
    if isinstance(node, dict):
        return {key: _to_device(value, device) for key, value in node.items()}
    return node


def newest_valid_checkpoint(paths: RunPaths) -> Optional[Path]:
    """The newest checkpoint whose file matches its manifest; torn or foreign files are skipped."""
    if not paths.checkpoints_dir.is_dir():
        return None
    for manifest_file in sorted(paths.checkpoints_dir.glob("step_*.json"), reverse=True):
        try:
            manifest = json.loads(manifest_file.read_text())
            data_file = paths.checkpoint_file(int(manifest["step"]))
            expected_bytes, expected_sha256 = manifest["bytes"], manifest["sha256"]
        except (ValueError, KeyError, TypeError):
            continue  # not one of our manifests
        if (
            data_file.is_file()
            and data_file.stat().st_size == expected_bytes
            and sha256_file(data_file) == expected_sha256
        ):
            return data_file
    return None


def _flatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON skeleton of ``node``; tensors and arrays move into ``tensors`` under generated keys."""
    if isinstance(node, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = node.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(node, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(node.copy())
        return {"__ndarray__": key}
    if isinstance(node, dict):
        return {"__map__": [[_flatten_key(k), _flatten(v, tensors)] for k, v in node.items()]}
    if isinstance(node, tuple):
        return {"__tuple__": [_flatten(item, tensors) for item in node]}
    if isinstance(node, list):
        return [_flatten(item, tensors) for item in node]
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise TypeError(f"cannot checkpoint a value of type {type(node).__name__}")


def _flatten_key(key: Any) -> Any:
    if isinstance(key, (str, int)):
        return key
    raise TypeError(f"cannot checkpoint a mapping key of type {type(key).__name__}")


def _unflatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_unflatten(item, tensors) for item in node]
    if isinstance(node, dict):
        if "__tensor__" in node:
            return tensors[node["__tensor__"]]
        if "__ndarray__" in node:
            return tensors[node["__ndarray__"]].numpy()
        if "__tuple__" in node:
            return tuple(_unflatten(item, tensors) for item in node["__tuple__"])
        return {key: _unflatten(value, tensors) for key, value in node["__map__"]}
    return node
