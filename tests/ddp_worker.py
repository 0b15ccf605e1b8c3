"""Run by test_distributed.py, under torchrun or alone: a tiny character language model trained by `Trainer`.

`--merge N` (alone only) trains on batches made by joining the batches that N processes would take at the same
step (padded), which is what N data-parallel processes must compute. The stream's last batch is shorter, so
the processes hold different numbers of tokens in the last step of each epoch.
`--interrupt-at K --interrupt-rank R`: process R gets a Ctrl-C during step K; `--interrupt-in-validation`:
the main process gets one while it validates. `--never-improves`: validation reports the same figure every
time, so the plateau schedule halves the rate at each validation and early stopping ends the run.
"""

import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from core import distributed  # noqa: E402
from core.batching import pad  # noqa: E402
from core.decoder import DecoderConfig  # noqa: E402
from core.lm import LanguageModel, lm_forward  # noqa: E402
from core.lm_data import TokenStream  # noqa: E402
from core.tokenizers import BOS, PAD, CharTokenizer  # noqa: E402
from core.train_config import TrainConfig  # noqa: E402
from core.trainer import Trainer  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. " * 4


class Merged:
    """Batch i joins, row-wise, batch i of each of the n contiguous blocks of `stream`."""

    carries_state = True

    def __init__(self, stream: TokenStream, n: int):
        self.stream, self.n, self.shard = stream, n, len(stream) // n

    def __len__(self) -> int:
        return self.shard

    def batch(self, epoch: int, index: int):
        parts = [self.stream.batch(epoch, r * self.shard + index) for r in range(self.n)]
        # padding only in the epoch's last batch, after which the carried state is dropped anyway
        return tuple(pad([row for t in tensors for row in t.tolist()], PAD)[0] for tensors in zip(*parts))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--merge", type=int, default=1)
    p.add_argument("--resume")
    p.add_argument("--interrupt-at", type=int, default=0)
    p.add_argument("--interrupt-rank", type=int, default=0)
    p.add_argument("--interrupt-in-validation", action="store_true")
    p.add_argument("--never-improves", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    world, device = distributed.setup(torch.device("cpu"))
    tok = CharTokenizer.train(TEXT)
    torch.manual_seed(5)
    model = LanguageModel(tok, DecoderConfig(emb_dim=8, hidden_dim=24, cell="gru", dropout=args.dropout))
    stream = TokenStream([BOS] + tok.encode(TEXT), 2, 18)  # 10 batches, the last of 9 tokens
    train = Merged(stream, args.merge) if args.merge > 1 else stream
    steps = {"n": 0}

    def forward(m, batch, carry):
        if m.training:
            steps["n"] += 1
            if steps["n"] == args.interrupt_at and world.rank == args.interrupt_rank:
                os.kill(os.getpid(), signal.SIGINT)
        return lm_forward(m, batch, carry)

    config = TrainConfig(
        steps=args.steps,
        lr=1e-2,
        schedule="plateau" if args.never_improves else "constant",
        warmup_steps=0,
        valid_every=3,
        clip_norm=1e9,
        seed=3,
        plateau_patience=1,
        patience=2 if args.never_improves else 0,
    )

    def metrics(m):
        if args.interrupt_in_validation and world.main:
            os.kill(os.getpid(), signal.SIGINT)
        return {"figure": 1.0}

    trainer = Trainer(
        model,
        forward,
        train,
        config,
        args.out,
        model.payload,
        valid=TokenStream([BOS] + tok.encode(TEXT[:60]), 1, 12),
        metrics_fn=metrics,
        select="figure",
        device=device,
    )
    if args.resume:
        trainer.resume(args.resume, task="textgen")
    trainer.fit()
    # every process leaves its final weights, to show they stayed identical
    torch.save(model.state_dict(), Path(args.out) / f"weights.rank{world.rank}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main()
