"""Faster linear maps for decoding on the CPU: oneDNN with each large weight packed once into its layout.

Search calls the same few weights once per step on a small batch. There MKL's GEMM re-reads the plain weight
every call; oneDNN with a pre-packed weight did the decoder's 512 x 8000 output projection 1.6x (320 rows),
1.9x (64 rows) and 4.3x (5 rows) faster on our 2-core benchmark machine, and a GRU step (two GEMMs) 1.4-1.7x,
while for small weights (under ~0.5M values) its call overhead made it slower (benchmarks/README.md).

A packed copy is made on first use in eval mode and dropped by `forget` (which `RNNDecoder.train()` and
`.eval()` call); it is also remade whenever the weight's version counter or storage changes (load_state_dict,
in-place edits, .to()). Both are needed: fused optimizers update weights without bumping the version counter.
The same holds for bfloat16 weights (a model cast with `.to(torch.bfloat16)`) where the CPU multiplies bfloat16
natively (AVX512-BF16, AMX). Train mode, autograd, CUDA and other dtypes take the plain path; so does a torch
build without these ops.
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:  # torch's own (internal) oneDNN ops, the ones its CPU inference compiler uses
    _reorder = torch.ops.mkldnn._reorder_linear_weight
    _linear = torch.ops.mkldnn._linear_pointwise
    AVAILABLE = torch.backends.mkldnn.is_available()
    # bfloat16 only where the CPU multiplies it natively; elsewhere oneDNN would emulate it
    NATIVE_BF16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    DTYPES = (torch.float32, torch.bfloat16) if NATIVE_BF16 else (torch.float32,)
except (AttributeError, RuntimeError):
    AVAILABLE, DTYPES = False, ()

MIN_WEIGHT_SIZE = 500_000  # values; below this oneDNN's call overhead outweighs the faster product

# module -> {name: (((storage, version, shape, dtype) of each source), derived tensor)}; modules compare by identity
_packed: "weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[tuple, Tensor]]]" = weakref.WeakKeyDictionary()


def inference(module: nn.Module, x: Tensor) -> bool:
    """True when `module` is evaluated on x without autograd, in eval mode, on the CPU, in float32 (or
    bfloat16 where the CPU supports it)."""
    return (AVAILABLE and not module.training and not torch.is_grad_enabled() and x.device.type == "cpu"
            and x.dtype in DTYPES)


def linear(module: nn.Module, x: Tensor, activation: str = "none", weight: str = "weight", bias: str | None = "bias",
           columns: slice | None = None) -> Tensor:
    """F.linear(x, module.<weight>[:, columns], module.<bias>), then `activation` ("none" or "tanh"); packed
    when that is safe and faster. The names let nn.GRU/nn.LSTM weights (weight_ih_l0, ...) use it too;
    `columns` multiplies by a block of the weight's input columns (bias None: no bias)."""
    w = getattr(module, weight)
    b = getattr(module, bias) if bias else None
    if columns is not None:
        w = w[:, columns]
    if w.numel() < MIN_WEIGHT_SIZE or w.dtype != x.dtype or not inference(module, x):
        y = F.linear(x, w, b)
        return torch.tanh(y) if activation == "tanh" else y
    name = weight if columns is None else f"{weight}[:, {columns.start}:{columns.stop}]"
    return _linear(x, derived(module, name, (w,), lambda w: _reorder(w.contiguous())), b, activation, [], "")


def derived(module: nn.Module, name: str, sources: tuple[Tensor, ...], make: Callable[..., Tensor]) -> Tensor:
    """make(*sources) for weights `sources` of `module`, computed once and cached under `name` until `forget`
    or until any source's storage, version, shape or dtype changes."""
    key = tuple((t.data_ptr(), t._version, tuple(t.shape), t.dtype) for t in sources)
    cache = _packed.setdefault(module, {})
    if name not in cache or cache[name][0] != key:
        cache[name] = (key, make(*(t.detach() for t in sources)))
    return cache[name][1]


def forget(module: nn.Module) -> None:
    """Drop the packed copies of every weight in `module` and its submodules."""
    for m in module.modules():
        _packed.pop(m, None)
