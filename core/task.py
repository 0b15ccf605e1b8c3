"""Saving and loading a task object (language model, translator, captioner): its task name, its configs and
tokenizers as plain data, and its weights, in the one checkpoint format (core.checkpoint). Loading checks the
contents too, so that a damaged or hand-edited checkpoint is one line naming the file and the field."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from core.errors import UserError, check_config, check_device, first_line
from core.tokenizers import Tokenizer, tokenizer_from_dict

M = TypeVar("M", bound=nn.Module)


def task_payload(task: str, configs: dict[str, Any], tokenizers: dict[str, Tokenizer]) -> dict[str, Any]:
    """The checkpoint fields that describe a task object (the trainer adds its weights and its own state)."""
    return {
        "task": task,
        "config": {name: dataclasses.asdict(c) for name, c in configs.items()},
        "tokenizers": {name: t.to_dict() for name, t in tokenizers.items()},
    }


class Task(Protocol):
    """What a task object offers to be saved: its checkpoint fields, and its weights."""

    def payload(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...


def save_task(model: Task, path: str | Path) -> Path:
    """Write `model.payload()` and its weights to `path`, atomically."""
    return save_checkpoint(path, {**model.payload(), "model": model.state_dict()})


def load_task(
    path: str | Path,
    task: str,
    config_types: dict[str, type],
    build: Callable[..., M],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> M:
    """The task object of a checkpoint, in eval mode on `device` with its weights in `dtype`:
    `build(configs, tokenizers)` makes it from the configs (each `config_types[name]`, checked against its
    ranges) and the tokenizers; the weights must then fit it exactly and be finite."""
    device = check_device("device", device)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        raise ValueError(f"dtype {dtype!r} is not a floating-point torch dtype (torch.float32, torch.bfloat16, ...)")
    ckpt, configs, tokenizers = read_task(path, task, config_types, device)
    try:
        model = build(configs, tokenizers)
    except (ValueError, KeyError, TypeError) as err:  # settings that do not fit together, a missing tokenizer
        raise CheckpointError(f"{path}: its config does not make a model ({first_line(err)})") from None
    load_weights(path, model, ckpt["model"])
    return model.to(device, dtype).eval()


def read_task(
    path: str | Path, task: str, config_types: dict[str, type], device: str | torch.device = "cpu"
) -> tuple[dict, dict[str, Any], dict[str, Tokenizer]]:
    """A checkpoint of `task` with its contents checked: the checkpoint, its configs (each a `config_types[name]`
    within its ranges) and its tokenizers. What a resumed run and `load_task` both read."""
    ckpt = load_checkpoint(path, task=task, map_location=device)
    configs = {name: _config(path, ckpt["config"], name, kind) for name, kind in config_types.items()}
    tokenizers = {}
    for name, data in _mapping(path, ckpt, "tokenizers").items():
        try:
            tokenizers[name] = tokenizer_from_dict(data)
        except Exception as err:  # a damaged tokenizer fails in sentencepiece or in our own reader
            raise CheckpointError(f"{path}: tokenizer {name!r} cannot be read ({first_line(err)})") from None
    _mapping(path, ckpt, "model")
    return ckpt, configs, tokenizers


def load_weights(path: str | Path, model: nn.Module, weights: Any) -> None:
    """Load a checkpoint's weights into `model`; one CheckpointError when they do not fit it or are not finite."""
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: field 'model' is not a mapping")
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor) or (tensor.is_floating_point() and not tensor.isfinite().all()):
            raise CheckpointError(f"{path}: weight {name} holds values that are not finite numbers")
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:  # missing, unexpected or misshapen weights
        raise CheckpointError(f"{path}: its weights do not fit its config ({first_line(err)})") from None


def _mapping(path: str | Path, ckpt: dict, field: str) -> dict:
    if not isinstance(ckpt[field], dict):
        raise CheckpointError(f"{path}: field {field!r} is not a mapping")
    return ckpt[field]


def _config(path: str | Path, configs: Any, name: str, kind: type) -> Any:
    """configs[name] as a `kind` dataclass, its fields checked against the ranges and choices it declares."""
    if not isinstance(configs, dict) or not isinstance(configs.get(name), dict):
        raise CheckpointError(f"{path}: config {name!r} is missing or not a mapping")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(configs[name]) - known)
    if unknown:
        raise CheckpointError(f"{path}: config {name!r} has an unknown field {unknown[0]!r}")
    try:
        config = kind(**configs[name])
        for field in dataclasses.fields(kind):
            _check_type(field.name, getattr(config, field.name), field.type)
        check_config(config)
    except UserError as err:
        raise CheckpointError(f"{path}: config {name!r}: {err}") from None
    return config


def _check_type(name: str, value: Any, annotation: Any) -> None:
    """A field's value against its annotation's basic type (int, float, str, bool), read from its source text."""
    text = str(annotation)
    kinds: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "str": str, "bool": bool}
    expected = kinds.get(text.split(" |")[0])
    if value is None and "None" in text:
        return
    if expected is not None and (not isinstance(value, expected) or (expected is not bool and isinstance(value, bool))):
        raise UserError(f"field {name!r} holds {value!r}, not a {text}")
