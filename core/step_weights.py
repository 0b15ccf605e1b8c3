"""Training's speed path for the decoder's loop over the target (input feeding makes each step wait for the
last): the weights and the memory that every step reads get their gradients in one product over all steps.

Autograd adds each step's share of a weight's gradient, g^T x, a product over only the batch's rows, into the
gradient as it goes (for the model of benchmarks/peers.py: four weights and the memory at each of 31 steps). Here
each step records its factors (g, x) in backward instead, and the weight's gradient is made once from all of
them. The weight enters the graph through a gate that every step reads, so autograd runs the gate's backward
after every step's. Values and gradients equal autograd's, up to the order of the sums (tests/test_decoder.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable


class StepWeight:
    """A weight W that each step of a loop multiplies by, `linear(x)` = x @ W^T; its gradient is G^T X over
    the (g, x) of every step."""

    def __init__(self, weight: Tensor):
        self.records: list[tuple[Tensor, Tensor]] = []
        self.value = _Gate.apply(weight, self)

    def linear(self, x: Tensor) -> Tensor:
        return _StepLinear.apply(x, self.value, self)

    def gradient(self) -> Tensor:
        g, x = (torch.cat([r[i].reshape(-1, r[i].size(-1)) for r in self.records]) for i in (0, 1))
        return g.t() @ x


class StepMemory(StepWeight):
    """The same for a memory M (B, S, D) that each step reads with batched products: `read(a)` is a @ M
    (a: (B, n, S)) and `scores(q)` is q @ M^T (q: (B, n, D)); each records (a, b) with M's gradient a^T b."""

    def read(self, a: Tensor) -> Tensor:
        return _StepMemoryProduct.apply(a, self.value, self, False)

    def scores(self, q: Tensor) -> Tensor:
        return _StepMemoryProduct.apply(q, self.value, self, True)

    def gradient(self) -> Tensor:
        a, b = (torch.cat([r[i] for r in self.records], dim=1) for i in (0, 1))
        return a.transpose(1, 2) @ b


class DecoderLoop(NamedTuple):
    """What every step of the decoder's training loop reads: the RNN's weights per layer, the attention's query
    projection and memory, the attentional vector's weight."""

    w_ih: list[StepWeight]
    w_hh: list[StepWeight]
    query: StepWeight
    memory: StepMemory
    combine: StepWeight


class _Gate(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: Tensor, owner: StepWeight) -> Tensor:
        ctx.owner = owner
        return weight.view_as(weight)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, _zeros: Tensor) -> tuple[Tensor | None, None]:
        owner = ctx.owner
        gradient = owner.gradient() if owner.records else None
        owner.records.clear()  # a second backward (retain_graph) records its own
        return gradient, None


class _StepLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, owner: StepWeight) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.owner = owner
        return F.linear(x, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None]:
        x, weight = ctx.saved_tensors
        if ctx.needs_input_grad[1]:
            ctx.owner.records.append((g, x))
        return g @ weight, None, None  # the weight's share: StepWeight.gradient


class _StepMemoryProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, memory: Tensor, owner: StepMemory, transposed: bool) -> Tensor:
        ctx.save_for_backward(a, memory)
        ctx.owner, ctx.transposed = owner, transposed
        return torch.bmm(a, memory.transpose(1, 2) if transposed else memory)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None]:
        a, memory = ctx.saved_tensors
        if ctx.needs_input_grad[1]:  # y = a M: dM = a^T g; y = a M^T: dM = g^T a (StepMemory.gradient)
            ctx.owner.records.append((g, a) if ctx.transposed else (a, g))
        return torch.bmm(g, memory if ctx.transposed else memory.transpose(1, 2)), None, None, None
