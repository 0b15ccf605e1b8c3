"""The CPU speed path of decoding, kept beside the textbook model.

`decoder.py`, `attention.py` and `search.py` compute what the papers write. Where that is slow on a CPU they
call this module, and each function here gives the same result as the plain computation it names (and falls
back to it where it does not apply: training, autograd, CUDA, dtypes oneDNN lacks, small sizes):
- `linear`, `rnn_step`: oneDNN with each large weight packed once into its preferred layout, and one
  inference step of nn.GRU/nn.LSTM written out to use them (the embedding's share of the input gates read
  from a per-token table);
- `topk`: beam search's candidates sought in the blocks with the largest maxima first;
- `additive_scores`: Bahdanau's scores a cache-sized chunk of beams at a time.
Training's counterpart, for the decoder's loop over the target: `core.step_weights`.
What each buys, measured: benchmarks/README.md.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

DTYPES: tuple[torch.dtype, ...] = ()  # what oneDNN multiplies natively here
try:  # torch's own (internal) oneDNN ops, the ones its CPU inference compiler uses
    _reorder = torch.ops.mkldnn._reorder_linear_weight
    _linear = torch.ops.mkldnn._linear_pointwise
    AVAILABLE = torch.backends.mkldnn.is_available()
    # bfloat16 only where the CPU multiplies it natively; elsewhere oneDNN would emulate it
    NATIVE_BF16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    DTYPES = (torch.float32, torch.bfloat16) if NATIVE_BF16 else (torch.float32,)
except (AttributeError, RuntimeError):
    AVAILABLE = False

MIN_WEIGHT_SIZE = 500_000  # values; below this oneDNN's call overhead outweighs the faster product
MAX_TABLE_VALUES = 1 << 24  # 64 MB of float32: the largest per-token table of input gates kept
TOPK_BLOCK = 64  # the fastest of 32 .. 512 for beam search's candidates

# module -> {name: ((updates, (storage, version, shape, dtype) of each source), derived tensor)}; by identity
_packed: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[tuple, Tensor]]] = weakref.WeakKeyDictionary()
_updates = 0  # optimizer steps taken in this process: fused ones change weights without bumping their versions


def _count_update(*_: Any) -> None:
    global _updates
    _updates += 1


register_optimizer_step_post_hook(_count_update)  # every optimizer, every step


# ---- packed oneDNN weights ---------------------------------------------------------------------------


def inference(module: nn.Module, x: Tensor) -> bool:
    """Whether `module` runs on x without autograd, in eval mode, on the CPU, in a dtype oneDNN multiplies."""
    on_cpu = AVAILABLE and x.device.type == "cpu" and x.dtype in DTYPES
    return on_cpu and not module.training and not torch.is_grad_enabled()


def linear(
    module: nn.Module, x: Tensor, weight: str = "weight", bias: str | None = "bias", columns: slice | None = None
) -> Tensor:
    """F.linear(x, module.<weight>[:, columns], module.<bias>), with a packed copy of the weight where that is
    safe and faster. The names let nn.GRU/nn.LSTM weights (weight_ih_l0, ...) use it too; `columns` multiplies
    by a block of the weight's input columns (bias None: no bias). The packed copy is remade whenever the
    weight's storage, version counter, shape or dtype changes (load_state_dict, in-place edits, .to())."""
    w = getattr(module, weight)
    b = getattr(module, bias) if bias else None
    if columns is not None:
        w = w[:, columns]
    if w.numel() < MIN_WEIGHT_SIZE or w.dtype != x.dtype or not inference(module, x):
        return F.linear(x, w, b)
    name = weight if columns is None else f"{weight}[:, {columns.start}:{columns.stop}]"
    return _linear(x, derived(module, name, (w,), lambda w: _reorder(w.contiguous())), b, "none", [], "")


def derived(module: nn.Module, name: str, sources: tuple[Tensor, ...], make: Callable[..., Tensor]) -> Tensor:
    """make(*sources) for weights `sources` of `module`, computed once and cached under `name` until `forget`,
    any optimizer's next step, or a change of any source's storage, version, shape or dtype."""
    key = (_updates, *((t.data_ptr(), t._version, tuple(t.shape), t.dtype) for t in sources))
    cache = _packed.setdefault(module, {})
    if name not in cache or cache[name][0] != key:
        cache[name] = (key, make(*(t.detach() for t in sources)))
    return cache[name][1]


def forget(module: nn.Module) -> None:
    """Drop the packed copies of every weight in `module` and its submodules: a module calls this when it moves
    (`.to()`) and when it switches between train and eval (which brackets any update made without an optimizer
    or a version bump, such as a write through `.data`)."""
    for m in module.modules():
        _packed.pop(m, None)


def rnn_step(
    rnn: nn.RNNBase, embedding: nn.Embedding, tokens: Tensor, feed: Tensor | None, h: Tensor, c: Tensor | None
) -> tuple[Tensor, Tensor | None] | None:
    """One inference step of `rnn` (nn.GRU or nn.LSTM, batch first) on [embedding(tokens); feed] from states
    h, c (B, L, H): the new h, c (B, L, H), the same equations with packed weights; None where the plain
    nn.GRU/nn.LSTM call should run instead."""
    if not inference(rnn, h):
        return None
    hs: list[Tensor] = []
    cs: list[Tensor] = []
    for layer in range(rnn.num_layers):
        if layer == 0:
            gx = _input_gates(rnn, embedding, tokens, feed)  # (B, G)
        else:
            gx = linear(rnn, hs[-1], weight=f"weight_ih_l{layer}", bias=f"bias_ih_l{layer}")  # (B, G)
        gh = linear(rnn, h[:, layer], weight=f"weight_hh_l{layer}", bias=f"bias_hh_l{layer}")  # (B, G)
        x, cell = cell_update(gx, gh, h[:, layer], None if c is None else c[:, layer])
        hs.append(x)  # no dropout between layers: this path runs in eval mode only
        if cell is not None:
            cs.append(cell)
    return torch.stack(hs, dim=1), torch.stack(cs, dim=1) if cs else None


def cell_update(gx: Tensor, gh: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """nn.GRU's (c None) or nn.LSTM's equations from the input and hidden gates (B, G): the new h, c (B, H)."""
    if c is None:
        xr, xz, xn = gx.chunk(3, dim=1)
        hr, hz, hn = gh.chunk(3, dim=1)
        reset, update = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        new = torch.tanh(xn + reset * hn)
        return new + update * (h - new), None
    i, f, g, o = (gx + gh).chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _input_gates(rnn: nn.RNNBase, embedding: nn.Embedding, tokens: Tensor, feed: Tensor | None) -> Tensor:
    """Layer 0's W_ih [embedding(tokens); feed] + b_ih (B, G): the embedding's share is a row of a per-token
    table (embedding @ W_ih[:, :E]^T + b_ih, made once per weights), a lookup instead of a product."""
    E, weight, bias = embedding.embedding_dim, rnn.get_parameter("weight_ih_l0"), rnn.get_parameter("bias_ih_l0")
    if embedding.num_embeddings * weight.size(0) > MAX_TABLE_VALUES:  # too big a table
        x = embedding(tokens)
        return linear(rnn, x if feed is None else torch.cat([x, feed], dim=1), "weight_ih_l0", "bias_ih_l0")
    sources = (embedding.weight, weight, bias)
    table = derived(rnn, "input_table", sources, lambda emb, w, b: torch.addmm(b, emb, w[:, :E].t()))
    gates = table.index_select(0, tokens)  # (B, G)
    if feed is not None:
        gates = gates + linear(rnn, feed, weight="weight_ih_l0", bias=None, columns=slice(E, None))
    return gates


# ---- choosing tokens ---------------------------------------------------------------------------------


def topk(candidates: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """candidates.topk(m, dim=1) (ties in any order): the m largest values of a row lie in its m blocks with
    the largest maxima (those hold m values at least as large as the m-th largest maximum, and nothing
    elsewhere exceeds it), so only those blocks, and the tail after the last whole block, go to topk."""
    rows, length = candidates.shape
    blocks = length // TOPK_BLOCK
    if candidates.device.type != "cpu" or blocks < 4 * m:  # CUDA's topk is fast; few blocks would not pay
        return candidates.topk(m, dim=1)
    whole = blocks * TOPK_BLOCK
    maxima = candidates[:, :whole].view(rows, blocks, TOPK_BLOCK).amax(dim=2)  # (R, blocks)
    chosen = maxima.topk(m, dim=1).indices  # (R, m)
    columns = (chosen.unsqueeze(2) * TOPK_BLOCK + torch.arange(TOPK_BLOCK, device=chosen.device)).view(rows, -1)
    columns = torch.cat([columns, torch.arange(whole, length, device=chosen.device).expand(rows, -1)], dim=1)
    values, picked = candidates.gather(1, columns).topk(m, dim=1)
    return values, columns.gather(1, picked)


# ---- attention ------------------------------------------------------------------------------------------


CHUNK_VALUES = 1 << 19  # energies per chunk (2 MB of float32)


def additive_scores(module: nn.Module, queries: Tensor, keys: Tensor, v: Tensor) -> Tensor:
    """Bahdanau's scores v . tanh(q + k) (B, T, S) of queries (B, T, A) over keys (B, S, A), in `inference` a few
    rows at a time: the energies (B, T, S, A), a search step's largest tensor, stay in the cache through the add,
    tanh and product (whole, made and freed every step, glibc hands them back to the system to fault in again)."""
    if not inference(module, queries):
        return torch.tanh(keys.unsqueeze(1) + queries.unsqueeze(2)) @ v
    (B, T, A), S = queries.shape, keys.size(1)
    rows = max(1, CHUNK_VALUES // (T * S * A))
    scores, energies = queries.new_empty(B, T, S), queries.new_empty(min(rows, B), T, S, A)
    for start in range(0, B, rows):
        end = min(B, start + rows)
        e = torch.add(queries[start:end].unsqueeze(2), keys[start:end].unsqueeze(1), out=energies[: end - start])
        torch.matmul(e.tanh_(), v, out=scores[start:end])
    return scores
