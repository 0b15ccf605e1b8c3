"""Translation speed of a trained `seq2seq.Translator`: sentences/s over a test set, greedy and beam 5, batch 64.

Unlike decode.py (random weights, fixed 50 steps), this times the real thing end to end: tokenizing, sorting
by length, encoding, searching until every hypothesis ends (EOS or the length cap), detokenizing. By default it
translates the test split of the default corpus with the checkpoint the translation recipe writes.

    python recipes/translate.py                      # first: train (writes runs/translate/member1/best.pt, ...)
    python benchmarks/translate.py                   # one model: greedy and beam 5 over the 1,014 Ding test sentences
    python benchmarks/translate.py @runs/translate/ensemble.args   # the recipe's ensemble of snapshots
    python benchmarks/translate.py --checkpoint CK --src test.de
    python benchmarks/translate.py --quick           # an untrained tiny model, a few seconds (smoke test)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import add_malloc_flag, environment, keep_freed_memory_unless_told, log, median_time  # noqa: E402
from benchmarks.tricks import disable_from_env  # noqa: E402
from core.cli import DTYPES, add_dtype_flag  # noqa: E402
from core.console import run_main  # noqa: E402
from core.decoder import DecoderConfig  # noqa: E402
from core.errors import UserError, check_device  # noqa: E402
from core.files import read_text  # noqa: E402
from core.tokenizers import WordTokenizer  # noqa: E402
from seq2seq.data import ding_pairs  # noqa: E402
from seq2seq.translator import EncoderConfig, Translator, load_ensemble  # noqa: E402

DEFAULT_CHECKPOINT = "runs/translate/member1/best.pt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, fromfile_prefix_chars="@"
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        help=f"a translation checkpoint (default: {DEFAULT_CHECKPOINT}); repeat it to time an ensemble",
    )
    p.add_argument("--src", help="source sentences, one per line (default: the Ding test split)")
    p.add_argument("--data-dir", help="where default data is cached")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up; the median is reported")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    add_dtype_flag(p)
    p.add_argument("--quick", action="store_true", help="an untrained tiny model on made-up sentences (smoke test)")
    add_malloc_flag(p)
    return p.parse_args(argv)


def tiny_model_and_sentences() -> tuple[Translator, list[str]]:
    """An untrained word-level translator and 20 made-up sentences: enough to exercise every code path."""
    sentences = [" ".join(["das", "haus", "ist", "klein", "und", "alt"][: 2 + i % 5]) for i in range(20)]
    tokenizer = WordTokenizer.train("\n".join(sentences), max_size=50)
    torch.manual_seed(0)
    model = Translator(
        tokenizer,
        tokenizer,
        EncoderConfig(enc_emb_dim=8, enc_hidden_dim=8),
        DecoderConfig(emb_dim=8, hidden_dim=16, cell="gru", attention="bahdanau"),
    )
    return model.eval(), sentences


def load(args: argparse.Namespace) -> tuple[Translator, list[Translator], list[str], str, str]:
    """The model, the other members of its ensemble (if any), the sentences, and names for both."""
    if args.quick:
        model, sentences = tiny_model_and_sentences()
        return model.to(DTYPES[args.dtype]), [], sentences, "untrained tiny model", "made-up sentences"
    checkpoints = args.checkpoint or [DEFAULT_CHECKPOINT]
    for path in checkpoints:
        if not Path(path).exists():
            raise UserError(
                f"{path}: no such checkpoint (train one with python recipes/translate.py, or pass --checkpoint)"
            )
    model, others = load_ensemble(checkpoints, device=check_device("--device", args.device), dtype=DTYPES[args.dtype])
    name = " + ".join(checkpoints)
    if args.src:
        return model, others, read_text(args.src).splitlines(), name, args.src
    return model, others, [s for s, _ in ding_pairs(args.data_dir)["test"]], name, "ding test split"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    keeps = keep_freed_memory_unless_told(args)
    without = disable_from_env()
    before = environment()
    model, others, sentences, model_name, data_name = load(args)
    repeats = 1 if args.quick else args.repeats
    out = {
        "benchmark": "translate",
        "checkpoint": model_name,
        "data": data_name,
        "sentences": len(sentences),
        "source_tokens": sum(len(model.source_ids(s)) for s in sentences if s.strip()),
        "batch_size": args.batch_size,
        "device": str(model.device),
        "dtype": args.dtype,
        "keeps_freed_memory": keeps,
        "without": without,
        "models": 1 + len(others),
        "parameters": sum(p.numel() for m in (model, *others) for p in m.parameters()),
    }
    for name, options in (
        ("greedy", {"method": "greedy"}),
        (f"beam{args.beam}", {"method": "beam", "beam_size": args.beam}),
    ):
        log(f"{name}: {len(sentences)} sentences, batch {args.batch_size}, {repeats} timed run(s) after a warm-up")

        def run(options: dict = options) -> list:
            return model.search(sentences, batch_size=args.batch_size, ensemble_with=others, **options)

        seconds, all_seconds, found = median_time(run, repeats)
        output_tokens = sum(len(hyps[0].tokens) for hyps in found)
        out[name] = {
            "seconds": seconds,
            "all_seconds": all_seconds,
            "sentences_per_s": len(sentences) / seconds,
            "output_tokens_per_s": output_tokens / seconds,
            "output_tokens": output_tokens,
        }
    out["environment"] = {
        **environment(),
        "load_average_before": before["load_average"],
        "cpu_busy_pct_others_before": before["cpu_busy_pct_others"],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    run_main(main)
