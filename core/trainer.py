"""One `Trainer` for every task: teacher forcing, cross-entropy, Adam(W), clipping, schedule, validation,
early stopping, best/last checkpoints, exact resume, Ctrl-C that saves, progress bar, logs and a loss plot.
Under torchrun the same trainer runs data parallel (DistributedDataParallel; see core.distributed)."""

from __future__ import annotations

import math
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from core.checkpoint import CheckpointError, load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from core.context import map_tensors
from core.distributed import World, current
from core.errors import UserError, check_config, check_device
from core.plots import plot_losses, plot_rewards
from core.runs import RunLog, snapshots_in
from core.task import load_weights
from core.train_config import (
    BatchSource,
    ForwardFn,
    ForwardStep,
    TrainConfig,
    WeightAverage,
    learning_rate,
    token_losses,
)


class Trainer:
    """Trains `model` with `forward_fn` on `train`; validates on `valid` (loss, perplexity) plus `metrics_fn`.

    `payload_fn()` returns the task's checkpoint fields (task, config, tokenizers); the trainer adds the
    weights and its own state. `select` names the validation figure that picks the best checkpoint.
    `objective(model, batch, carry) -> (loss, tokens, figures)`, when given, replaces teacher forcing in training
    steps (sequence-level training: `core.self_critical`); its figures go to the run log.

    In a world of N processes (`core.distributed.setup`) each process trains on its own 1/N of every epoch's
    batches (a contiguous block, so a carried state runs on), gradients are averaged across processes, and
    the main process alone validates, writes checkpoints and logs; the others follow its decisions.
    """

    def __init__(
        self,
        model: nn.Module,
        forward_fn: ForwardFn,
        train: BatchSource,
        config: TrainConfig,
        out_dir: str | Path,
        payload_fn: Callable[[], dict],
        valid: BatchSource | None = None,
        metrics_fn: Callable[[Any], dict[str, float]] | None = None,
        select: str = "valid_loss",
        maximize: bool = False,
        device: torch.device | str = "cpu",
        world: World | None = None,
        label: str = "train",
        bar_position: int = 0,
        objective: Callable[[Any, Any, Any], tuple[Tensor, int, dict[str, float]]] | None = None,
    ):
        check_config(config)
        self.model, self.forward_fn, self.train_data, self.valid_data = model, forward_fn, train, valid
        self.config, self.out_dir, self.payload_fn, self.metrics_fn = config, Path(out_dir), payload_fn, metrics_fn
        self.select, self.maximize, self.device, self.label = select, maximize, check_device("device", device), label
        self.bar = dict(position=bar_position, dynamic_ncols=True, mininterval=1.0)  # side by side: a bar each
        self.world, self.objective = world or current(), objective
        self.shard = len(train) // self.world.size  # batches per process and epoch
        if self.shard < 1:
            raise UserError(f"the training data makes {len(train)} batches, fewer than the {self.world.size} processes")
        if len(train) % self.world.size and self.world.main:
            warnings.warn(
                f"{len(train) % self.world.size} of the {len(train)} training batches per epoch are "
                f"left out: each of the {self.world.size} processes takes {self.shard}"
            )
        self.model.to(self.device)
        self.forward_step: nn.Module = ForwardStep(model, objective or forward_fn)
        if self.world.size > 1:  # also copies the main process's initial weights to every process
            self.forward_step = DistributedDataParallel(
                self.forward_step, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        # fused: one kernel for the whole update instead of a dozen passes over every parameter tensor
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.AdamW(model.parameters(), config.lr, weight_decay=config.weight_decay, fused=fused)
        self.amp = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        torch.manual_seed(config.seed + self.world.rank)  # different dropout draws in each process
        # Everything below is saved in checkpoints so that a resumed run continues exactly.
        self.step, self.epoch, self.batch_index, self.carry = 0, 0, 0, None
        self.plateau_scale, self.bad_validations = 1.0, 0
        self.best: float | None = None
        self.ema = WeightAverage(model, config.ema_decay) if config.ema_decay > 0 else None
        self.log = RunLog(self.out_dir / "log.jsonl")
        # Ctrl-C: a lone process stops after the current step; several processes stop after the step at
        # whose exchange any of them reports a pending Ctrl-C, so that all leave the loop together.
        self.stop_requested = self.interrupt_pending = self.resumed = False

    def lr_at(self, step: int) -> float:
        return learning_rate(self.config, step, self.plateau_scale)

    # -- checkpoints ----------------------------------------------------------------------------------
    def _process_state(self) -> dict:
        """What differs between the processes of a distributed run: random state and carried state."""
        # as a plain tuple: weights_only loading accepts no custom classes such as a NamedTuple
        carry = tuple(self.carry) if isinstance(self.carry, tuple) else self.carry
        return {"rng": rng_state(self.device), "carry": map_tensors(carry, lambda t: t.cpu())}

    def state(self, raw_params: list[Tensor] | None = None, by_rank: list[dict] | None = None) -> dict:
        position = dict(step=self.step, epoch=self.epoch, batch_index=self.batch_index, best=self.best)
        scheduler = dict(plateau_scale=self.plateau_scale, bad_validations=self.bad_validations)
        # raw_params: the weights to train on when "model" holds their average; by_rank: every process's state
        optimizer, scaler = self.optimizer.state_dict(), self.scaler.state_dict()
        return dict(raw_params=raw_params, optimizer=optimizer, scaler=scaler, scheduler=scheduler, **position,
                    world_size=self.world.size, **self._process_state(), by_rank=by_rank or [],
                    train_config=asdict(self.config))  # fmt: skip

    def _gather_process_states(self) -> list[dict] | None:
        """Every process's `_process_state()`, for the main process to save (all processes must call this)."""
        return self.world.gather(self._process_state()) if self.world.size > 1 else None

    def save(self, name: str, by_rank: list[dict] | None = None) -> Path:
        with self.averaged_weights() as raw_params:
            payload = {
                **self.payload_fn(),
                "model": self.model.state_dict(),
                "trainer": self.state(raw_params, by_rank),
            }
            return save_checkpoint(self.out_dir / name, payload)

    def snapshot_paths(self) -> list[Path]:
        """The kept snapshots (weights at the last `config.snapshots` validations), oldest first."""
        return [path for _, path in snapshots_in(self.out_dir)]

    def _save_snapshot(self) -> None:
        # Weights only (no optimizer): a snapshot serves an ensemble of the run's last few validation points,
        # which costs no training (Huang et al. 2017, "Snapshot ensembles").
        with self.averaged_weights():
            save_checkpoint(
                self.out_dir / f"snapshot-{self.step}.pt", {**self.payload_fn(), "model": self.model.state_dict()}
            )
        for old in self.snapshot_paths()[: -self.config.snapshots]:
            old.unlink()

    @contextmanager
    def averaged_weights(self) -> Iterator[list[Tensor] | None]:
        """Inside, the model holds the moving average of its weights; yields copies of the raw ones (or None
        without an average). The raw weights are back on exit."""
        with self.ema.swapped_in() if self.ema is not None else nullcontext() as raw:
            yield raw

    def resume(self, path: str | Path, task: str) -> None:
        """Continue from a checkpoint: same weights, optimizer, schedule, RNG, data position and carry. Weights
        that do not fit or are not finite, and a trainer state that cannot be restored, are one CheckpointError."""
        ckpt = load_checkpoint(path, task=task, map_location=self.device)
        if not ckpt.get("trainer"):
            raise UserError(f"{path} holds no trainer state (it was exported for inference); cannot --resume")
        load_weights(path, self.model, ckpt.get("model"))  # the average, when the run kept one
        try:
            self._restore(path, ckpt["trainer"])
        except (AttributeError, KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:  # edited, damaged
            raise CheckpointError(
                f"{path}: its trainer state cannot be restored ({type(err).__name__}: {err})"
            ) from None

    def _restore(self, path: str | Path, state: dict) -> None:
        """The trainer state `state` of checkpoint `path` (its weights already loaded) taken over."""
        if self.ema is not None:
            self.ema.reset()
        if state.get("raw_params") is not None:
            with torch.no_grad():
                torch._foreach_copy_(list(self.model.parameters()), [t.to(self.device) for t in state["raw_params"]])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.plateau_scale = state["scheduler"]["plateau_scale"]
        self.bad_validations = state["scheduler"]["bad_validations"]
        self.step, self.epoch, self.batch_index = state["step"], state["epoch"], state["batch_index"]
        self.resumed, self.best = True, state["best"]
        by_rank = state.get("by_rank") or []
        if len(by_rank) == self.world.size > 1:
            own = by_rank[self.world.rank]
        elif self.world.size == 1:
            own = state
        else:  # saved by another number of processes, whose blocks of batches differ from this run's
            own = {"rng": None, "carry": None}
            torch.manual_seed(self.config.seed + self.world.rank + self.step)
        if state.get("world_size", 1) != self.world.size:
            # the data position means nothing with other blocks: go on from the start of the next epoch
            self.epoch, self.batch_index = self.epoch + 1, 0
            if self.world.main:
                warnings.warn(
                    f"{path} was written by {state.get('world_size', 1)} process(es), this run has "
                    f"{self.world.size}: training continues from the start of epoch {self.epoch}"
                )
        self.carry = map_tensors(own["carry"], lambda t: t.to(self.device))
        if own["rng"] is not None:
            restore_rng_state(own["rng"], self.device)

    # -- the loop -------------------------------------------------------------------------------------
    def _loss(self, batch: Any, carry: Any, training: bool = False) -> tuple[Tensor, Tensor, int, Any]:
        """Mean loss to optimise (with label smoothing), summed plain NLL, target token count, new carry."""
        # Only training goes through the distributed wrapper: validation runs in the main process alone.
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
            out = self.forward_step(batch, carry) if training else self.forward_fn(self.model, batch, carry)
        logits, targets, carry = out[:3]
        loss, nll, n_tokens = token_losses(logits, targets, self.config.label_smoothing)
        return (loss + out[3] if len(out) > 3 else loss), nll, n_tokens, carry

    @torch.no_grad()
    def total_loss(self, data: BatchSource) -> tuple[float, int]:
        """Summed NLL (nats) and target-token count over every batch of `data`, in eval mode."""
        was_training = self.model.training
        self.model.eval()
        total, count, carry = 0.0, 0, None
        for index in range(len(data)):
            batch = map_tensors(data.batch(0, index), lambda t: t.to(self.device))
            _, nll, n, carry = self._loss(batch, carry if data.carries_state else None)
            total, count = total + float(nll), count + n
        self.model.train(was_training)
        return total, count

    def evaluate(self) -> dict[str, float]:
        """Validation loss (nats per target token), perplexity and the task's own metrics."""
        metrics: dict[str, float] = {}
        if self.valid_data is not None:
            total, count = self.total_loss(self.valid_data)
            metrics["valid_loss"] = total / max(1, count)
            metrics["valid_ppl"] = math.exp(min(metrics["valid_loss"], 50.0))
        if self.metrics_fn is not None:
            was_training = self.model.training
            self.model.eval()
            with torch.no_grad():
                metrics.update(self.metrics_fn(self.model))
            self.model.train(was_training)
        return metrics

    def _validate_and_save(self) -> bool:
        """Validate, log, keep best and last; returns True when early stopping says stop. Every process calls
        this; the main one does the work and the others take over its schedule and stopping decision."""
        by_rank = self._gather_process_states()
        if self.world.main:
            self._validate_and_save_main(by_rank)
        decisions = (self.best, self.bad_validations, self.plateau_scale)
        self.best, self.bad_validations, self.plateau_scale = self.world.from_main(decisions)
        return self.config.patience > 0 and self.bad_validations >= self.config.patience

    def _validate_and_save_main(self, by_rank: list[dict] | None) -> None:
        with self.averaged_weights():
            metrics = self.evaluate()
        self.log.append({"step": self.step, "split": "valid", **metrics})
        value = metrics.get(self.select)
        improved = value is not None and (
            self.best is None or (value > self.best if self.maximize else value < self.best)
        )
        if improved:
            self.best, self.bad_validations = value, 0
        else:
            self.bad_validations += 1
            if self.config.schedule == "plateau" and self.bad_validations % max(1, self.config.plateau_patience) == 0:
                self.plateau_scale *= self.config.plateau_factor
        self.save("last.pt", by_rank)
        if improved:
            self.save("best.pt", by_rank)
        if self.config.snapshots:
            self._save_snapshot()
        self.plot()
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()) or "checkpoint saved"
        prefix = "" if self.label == "train" else f"{self.label}, "
        tqdm.write(f"{prefix}step {self.step}: {shown}" + (" (best)" if improved else ""))

    def fit(self) -> dict[str, float]:
        """Train until `config.steps`, early stopping or Ctrl-C; returns the last validation metrics."""
        if main := self.world.main:
            self._clear_later_state()
        self.model.train()
        # Ctrl-C, or SIGTERM (as a job scheduler stops a job): stop after this step and save
        previous = {signum: signal.signal(signum, self._on_interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
        bar = tqdm(total=self.config.steps, initial=self.step, desc=self.label, disable=not main, **self.bar)
        tokens_seen, started = 0, time.perf_counter()
        try:
            while self.step < self.config.steps and not self.stop_requested:
                lr = self.lr_at(self.step)
                loss_value, grad_norm, tokens, figures = self._train_step(lr)
                tokens_seen += tokens
                speed = tokens_seen / (time.perf_counter() - started)
                if main:
                    record = dict(step=self.step, split="train", loss=loss_value, lr=lr, grad_norm=grad_norm)
                    self.log.append(record | figures | {"tokens_per_s": speed})
                shown = {name: f"{value:.3f}" for name, value in figures.items() if name == "reward"}
                bar.set_postfix(loss=f"{loss_value:.3f}", **shown, tok_s=f"{speed:.0f}", lr=f"{lr:.2e}")
                bar.update(1)
                last_step = self.step == self.config.steps
                if (self.step % self.config.valid_every == 0 or last_step) and self._validate_and_save():
                    tqdm.write(f"early stopping: no better {self.select} in {self.config.patience} validations")
                    break
            if self.stop_requested:
                by_rank = self._gather_process_states()
                if not main:
                    return {}
                path = self.save("last.pt", by_rank)
                tqdm.write(f"interrupted at step {self.step}; saved {path}")  # the recipe says how to resume
        finally:
            bar.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self._last_valid()

    def _clear_later_state(self) -> None:
        """A fresh run starts a fresh log; a resumed one drops the records and snapshots after its step. A fresh
        run also removes an earlier run's checkpoints (recipes: --overwrite) now, so that none outlives it to be
        resumed as if it were its own."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log.truncate(self.step)
        for step, path in snapshots_in(self.out_dir):
            if step > self.step:
                path.unlink()
        if not self.resumed:
            for name in ("last.pt", "best.pt"):
                (self.out_dir / name).unlink(missing_ok=True)

    def _train_step(self, lr: float) -> tuple[float, float, int, dict[str, float]]:
        """One update on the next batch at learning rate `lr`: the loss over all processes' tokens, the gradient
        norm, the number of those tokens and the objective's figures."""
        if self.batch_index >= self.shard:
            self.epoch, self.batch_index, self.carry = self.epoch + 1, 0, None
        index = self.world.rank * self.shard + self.batch_index
        batch = map_tensors(self.train_data.batch(self.epoch, index), lambda t: t.to(self.device))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        figures: dict[str, float] = {}
        if self.objective is None:
            loss, _, n_tokens, carry = self._loss(batch, self.carry, training=True)
        else:
            (loss, n_tokens, figures), carry = self.forward_step(batch, None), None
        self.optimizer.zero_grad(set_to_none=True)
        share, all_tokens = self.world.token_share(loss, n_tokens, self.device)
        self.scaler.scale(share).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm or math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.step)
        # truncated BPTT: keep the state's values, cut its history
        self.carry = map_tensors(carry, Tensor.detach) if self.train_data.carries_state else None
        self.step, self.batch_index = self.step + 1, self.batch_index + 1
        # A small exchange after the step: the loss over all processes' tokens, and whether any of them was
        # interrupted (all must stop at the same step, or the others would wait forever).
        loss_sum, stops = self.world.sum(
            [loss.item() * n_tokens, float(self.stop_requested or self.interrupt_pending)], self.device
        )
        if stops > 0 and not self.stop_requested:
            self.stop_requested = True
            tqdm.write("Ctrl-C: stopping all processes after this step and saving a checkpoint")
        if not math.isfinite(loss_sum):  # every process sees the same sum, so all stop here; nothing is saved
            raise UserError(
                f"training diverged: the loss is {loss_sum / max(1, all_tokens)} at step {self.step}; "
                f"lower the learning rate (--lr, now {lr:g}) or clip gradients (--clip-norm)"
            )
        return loss_sum / max(1, all_tokens), float(grad_norm), int(all_tokens), figures

    def _last_valid(self) -> dict[str, float]:
        valid = [r for r in self.log.records() if r["split"] == "valid"]
        return {k: v for k, v in valid[-1].items() if k not in ("step", "split")} if valid else {}

    @property
    def interrupted(self) -> bool:
        """Whether a Ctrl-C arrived during `fit` (the recipes then stop instead of going on to testing)."""
        return self.stop_requested or self.interrupt_pending

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        if self.world.size > 1:
            # torchrun passes each process one Ctrl-C and kills them 30 s later: note it for the next
            # exchange (acting at once could leave one process in a collective the others never join)
            self.interrupt_pending = True
            return
        if self.stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.stop_requested = True
        tqdm.write("Ctrl-C: finishing this step and saving a checkpoint (press again to quit now)")

    def plot(self) -> Path | None:
        """Save the loss curves as loss.png; with an objective, the rewards and `select` as rewards.png."""
        if self.objective is not None:
            plot_rewards(self.log.records(), self.out_dir / "rewards.png", self.select)
        return plot_losses(self.log.records(), self.out_dir / "loss.png")
