"""Several processes training one model (data parallel): `torchrun --nproc_per_node N recipes/X.py ...`.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; `setup` joins the process group (NCCL on CUDA, one GPU per
process; Gloo on the CPU). A plain `python recipes/X.py` is a world of one and touches nothing here. Rank 0 is
the main process: it alone writes checkpoints and logs, validates and prints; the others stay quiet.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from core.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process runs the body first (e.g. fetching data into the shared cache), then the others."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()

    def from_main(self, value: Any) -> Any:
        """The main process's `value` (any picklable object), on every process."""
        if self.size == 1:
            return value
        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value` (any picklable object), in rank order, on every process."""
        if self.size == 1:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def token_share(self, loss: torch.Tensor, n_tokens: int, device: torch.device) -> tuple[torch.Tensor, int]:
        """The loss to differentiate, and the target tokens of all processes in this step.
        DistributedDataParallel averages the processes' gradients; weighing each process's per-token mean by
        its share of all processes' tokens makes that average the gradient of the mean over every token of
        the N batches, as one process would compute it on all of them."""
        if self.size == 1:
            return loss, n_tokens
        (total,) = self.sum([n_tokens], device)
        return loss * (n_tokens * self.size / max(1.0, total)), int(total)

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum of `values` over all processes."""
        if self.size == 1:
            return values
        total = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return total.tolist()


def current() -> World:
    """The world this process belongs to (a world of one unless `setup` joined a process group)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def launched() -> bool:
    """Whether torchrun started this process as one of several (before `setup` joins them)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group that torchrun describes; returns the world and this process's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1 or dist.is_initialized():
        return current(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"process {local_rank} of {size} needs a GPU of its own, but only "
                f"{torch.cuda.device_count()} are visible (use --nproc_per_node <= the GPU count)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    # the others wait while the main process fetches data, trains tokenizers and validates (BLEU decoding)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    world = current()
    if not world.main:  # one copy of the output is enough: the others keep stderr for errors only
        sys.stdout = open(os.devnull, "w")
    return world, device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
