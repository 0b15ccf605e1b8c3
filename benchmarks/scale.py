"""How the translation recipe's cost grows with the corpus: made-up parallel corpora of 20k, 200k and 2M pairs,
each through the recipe's own code path (`recipes/translate.py --corpus PAIRS.tsv --members 1`) in a fresh
process; prints one JSON object.

For each corpus: the seconds to the first training step (reading, splitting, tokenizer training, encoding and
batching; also each part), the peak resident memory (VmHWM) at the first step and at the end, the median seconds
per validation (validation loss and the BLEU of greedy decoding), and training target tokens/s. Then the log-log
slopes from the smallest corpus to the largest: 1 means "grows as fast as the corpus", 0 "constant". The test
phase (beam search over the test split) is left out: it is capped as validation is.

The corpora are made up, deterministically from --seed: German-like and English-like words (syllables of each
language's spelling, Zipf-distributed over a lexicon), 4 to 20 words per sentence, the English a word-for-word
rendering of the German with some neighbours swapped, so that there is something to learn.

    python benchmarks/scale.py                          # 20k, 200k, 2M pairs (~15 min on 2 cores)
    python benchmarks/scale.py --sizes 20000 200000     # a part of it
    python benchmarks/scale.py --quick                  # tiny corpora and model, a few seconds (smoke test)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import math
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()  # a child's clock for its imports (numpy, torch, the recipe)
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.common import environment, log  # noqa: E402

SIZES = (20_000, 200_000, 2_000_000)
QUICK_SIZES = (300, 3_000)
STEPS, VALID_EVERY = 30, 10  # three validations, of which the median is reported
# a tiny model and word tokens for --quick: the figures mean nothing, the code path is the same
QUICK_FLAGS = ["--level", "word", "--vocab-size", "200", "--emb-dim", "16", "--hidden-dim", "32",
               "--enc-emb-dim", "16", "--enc-hidden-dim", "16", "--valid-sentences", "20"]  # fmt: skip
LEXICON = 30_000  # words per language
SPELLING = {
    "de": (
        "b d f g h k l m n p r s t w z sch st sp pf kr gr br tr fl bl".split(),
        "a e i o u ä ö ü ei au ie eu".split(),
        ["", "", "n", "r", "l", "s", "t", "ch", "ng", "nd", "rt", "ß", "cht"],
    ),
    "en": (
        "b c d f g h j k l m n p r s t v w th sh ch st pl gr br".split(),
        "a e i o u ee oo ea ai ou".split(),
        ["", "", "n", "r", "l", "s", "t", "ck", "ng", "nd", "st", "ght"],
    ),
}


# ---- the made-up corpora ----


def lexicon(lang: str, rng: np.random.Generator) -> list[str]:
    """LEXICON distinct words of 1 to 3 syllables spelled like `lang`."""
    onsets, nuclei, codas = SPELLING[lang]
    words: dict[str, None] = {}
    while len(words) < LEXICON:
        syllables = rng.integers(1, 4)
        parts = [
            onsets[rng.integers(len(onsets))] + nuclei[rng.integers(len(nuclei))] + codas[rng.integers(len(codas))]
            for _ in range(syllables)
        ]
        words["".join(parts)] = None
    return list(words)


def sentence(words: list[str], ids: list[int], end: str) -> str:
    text = " ".join(words[i] for i in ids)
    return text[0].upper() + text[1:] + end


def write_corpus(path: Path, pairs: int, seed: int = 0, chunk: int = 100_000) -> None:
    """`pairs` made-up German-like<TAB>English-like lines, the same for the same seed on every machine."""
    rng = np.random.default_rng(seed)
    de, en = lexicon("de", rng), lexicon("en", rng)
    zipf = 1.0 / np.arange(1, LEXICON + 1) ** 1.05
    cdf = np.cumsum(zipf / zipf.sum())
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, pairs, chunk):
            n = min(chunk, pairs - start)
            lengths = rng.integers(4, 21, n)
            words = np.minimum(np.searchsorted(cdf, rng.random(int(lengths.sum()))), LEXICON - 1).tolist()
            swaps, ends = rng.random(n) < 0.5, rng.choice([".", ".", ".", "?", "!"], n)
            lines, at = [], 0
            for length, swap, end in zip(lengths.tolist(), swaps.tolist(), ends.tolist()):
                ids = words[at : at + length]
                at += length
                english = ids[:]
                if swap:  # some word order to learn: the last two words change places
                    english[-2:] = english[-1], english[-2]
                lines.append(f"{sentence(de, ids, end)}\t{sentence(en, english, end)}\n")
            f.write("".join(lines))


# ---- one corpus through the recipe, in a process of its own ----


def memory_mb(field: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or present (VmRSS) resident memory in MB, from /proc/self/status."""
    try:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return float("nan")
    return round(kb / 1024, 1)


class FirstStep(Exception):
    """Raised at the first training step of a profiled run: the profile covers what comes before it."""


def instrument(figures: dict[str, Any], profiler: cProfile.Profile | None = None) -> None:
    """Wrap the recipe's data steps and the Trainer's step and validation (at run time: nothing is edited) so
    that they record their times into `figures`."""
    import recipes.translate as recipe
    from core.trainer import Trainer

    started = time.perf_counter()
    figures["imports_seconds"] = round(started - STARTED, 2)
    figures["parts_seconds"], figures["peak_rss_mb_after"] = {}, {}

    def part(module: Any, name: str) -> None:
        original = getattr(module, name)

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            out = original(*a, **kw)
            figures["parts_seconds"][name] = round(time.perf_counter() - t0, 2)
            figures["peak_rss_mb_after"][name] = memory_mb()
            if name == "load_pairs":
                figures["split_pairs"] = {split: len(got) for split, got in out.items()}
            return out

        setattr(module, name, timed)

    for name in ("load_pairs", "train_tokenizers", "encode_pairs"):
        if hasattr(recipe, name):
            part(recipe, name)
    step, evaluate = Trainer._train_step, Trainer.evaluate
    steps: list[tuple[float, int]] = []
    validations: list[float] = []

    def train_step(self: Trainer, lr: float) -> tuple[float, float, int]:
        if not steps:
            figures["first_step_seconds"] = round(time.perf_counter() - started, 2)
            figures["peak_rss_mb_at_first_step"] = memory_mb()
            if profiler is not None:
                raise FirstStep
        t0 = time.perf_counter()
        out = step(self, lr)
        steps.append((time.perf_counter() - t0, out[2]))
        return out

    def timed_evaluate(self: Trainer) -> dict[str, float]:
        t0 = time.perf_counter()
        out = evaluate(self)
        validations.append(time.perf_counter() - t0)
        return out

    Trainer._train_step, Trainer.evaluate = train_step, timed_evaluate  # type: ignore[method-assign]
    recipe.evaluate = lambda *a, **kw: {}  # the test phase: left out
    figures["_steps"], figures["_validations"] = steps, validations


def child(corpus: str, out: str, flags: list[str], profile: bool) -> dict[str, Any]:
    """Run the recipe on `corpus` in this process and return its figures; with `profile`, only up to the first
    training step, under cProfile."""
    import recipes.translate as recipe

    figures: dict[str, Any] = {}
    profiler = cProfile.Profile() if profile else None
    instrument(figures, profiler)
    argv = ["--corpus", corpus, "--members", "1", "--out", out, "--overwrite", "--device", "cpu", *flags]
    with contextlib.redirect_stdout(sys.stderr):  # the recipe's own report; stdout carries the JSON alone
        try:
            if profiler is not None:
                profiler.enable()
            recipe.main(argv)
        except FirstStep:
            assert profiler is not None
            profiler.disable()
            figures.pop("_steps"), figures.pop("_validations")
            return figures | {"profile_to_first_step": top_functions(profiler)}
    steps, validations = figures.pop("_steps"), figures.pop("_validations")
    later = steps[1:] or steps  # the first step warms up
    figures |= {
        "validation_seconds": round(statistics.median(validations), 2),
        "all_validation_seconds": [round(v, 2) for v in validations],
        "tokens_per_s": round(sum(n for _, n in later) / sum(t for t, _ in later), 1),
        # a step that another process held up weighs on the mean, not on the median
        "tokens_per_s_median_step": round(statistics.median(n / t for t, n in later), 1),
        "steps": len(steps),
        "peak_rss_mb": memory_mb(),
    }
    return figures


def top_functions(profiler: cProfile.Profile, count: int = 25) -> list[str]:
    """The functions with the most time of their own, as lines "self s, cumulative s, calls, function"."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = sorted(stats.items(), key=lambda item: -item[1][2])[:count]
    return [
        f"{tt:8.2f} s {ct:8.2f} s {nc:>9} {Path(file).parent.name}/{Path(file).name}:{line}({func})"
        for (file, line, func), (_, nc, tt, ct, _) in rows
    ]


def measure(pairs: int, folder: Path, flags: list[str], seed: int, repeats: int, profile: bool) -> dict[str, Any]:
    """Make the corpus, run the recipe on it `repeats` times, each in a fresh process, and return the median of
    each figure (each run's figures too, when there are several)."""
    corpus = folder / f"pairs-{pairs}.tsv"
    t0 = time.perf_counter()
    write_corpus(corpus, pairs, seed)
    log(f"{pairs:,} pairs: {corpus.stat().st_size / 1e6:.0f} MB written in {time.perf_counter() - t0:.0f} s")
    runs = []
    for repeat in range(repeats):
        log(f"{pairs:,} pairs: running the recipe ({repeat + 1} of {repeats})")
        command = [sys.executable, __file__, *(["--profile"] if profile else []), "--child", str(corpus)]
        command += [str(folder / f"run-{pairs}"), "--", *flags]
        result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if result.returncode != 0:
            raise SystemExit(f"the recipe failed on {pairs:,} pairs (exit status {result.returncode})")
        runs.append(json.loads(result.stdout))
    size_mb = corpus.stat().st_size / 1e6
    corpus.unlink()
    merged = {"pairs": pairs, "corpus_mb": round(size_mb, 1), **median_of(runs)}
    return merged | ({"runs": runs} if repeats > 1 else {})


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number the median of the runs' (nested dictionaries alike); anything else the first run's."""
    first = runs[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, dict):
            out[key] = median_of([run[key] for run in runs])
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = round(statistics.median(run[key] for run in runs), 2)
        else:
            out[key] = value
    return out


def slope(rows: list[dict[str, Any]], key: str) -> float | None:
    """Least-squares slope of log(figure) over log(pairs)."""
    points = [(math.log(r["pairs"]), math.log(r[key])) for r in rows if r.get(key, 0) > 0]
    if len(points) < 2:
        return None
    mx, my = statistics.fmean(p[0] for p in points), statistics.fmean(p[1] for p in points)
    return round(sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points), 3)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The log-log slopes and whether the targets were met."""
    slopes = {key: slope(rows, key) for key in ("first_step_seconds", "peak_rss_mb", "validation_seconds")}
    largest = rows[-1]
    meets = {
        "validation_constant (slope <= 0.1)": (slopes["validation_seconds"] or 0) <= 0.1,
        "first_step_slope <= 1": (slopes["first_step_seconds"] or 0) <= 1,
        "memory_slope <= 1": (slopes["peak_rss_mb"] or 0) <= 1,
        f"{largest['pairs']:,} pairs: first step within 120 s": largest["first_step_seconds"] <= 120,
        f"{largest['pairs']:,} pairs: peak memory within 4 GB": largest["peak_rss_mb"] <= 4096,
    }
    return {"loglog_slopes": slopes, "meets": meets}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="corpus sizes in pairs")
    p.add_argument("--seed", type=int, default=0, help="the made-up corpora's seed")
    p.add_argument("--quick", action="store_true", help="tiny corpora and model: a smoke test")
    p.add_argument("--steps", type=int, default=STEPS, help="training steps per corpus (default: %(default)s)")
    p.add_argument("--valid-every", type=int, default=VALID_EVERY, help="steps between validations")
    p.add_argument("--repeats", type=int, default=1, help="runs per corpus; each figure is their median")
    p.add_argument("--profile", action="store_true", help="cProfile up to the first training step, then stop")
    p.add_argument("--keep", type=Path, help="a folder to keep the corpora and runs in (default: a temp folder)")
    p.add_argument("--child", nargs=2, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("flags", nargs="*", help="after --: flags for the recipe (its defaults otherwise)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.flags, args.profile)))
        return
    if args.quick:
        args.sizes, args.flags, args.steps, args.valid_every = QUICK_SIZES, QUICK_FLAGS + args.flags, 4, 2
    flags = ["--steps", str(args.steps), "--valid-every", str(args.valid_every), *args.flags]
    before = environment()
    with tempfile.TemporaryDirectory(prefix="seqgen-scale-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows = [measure(n, folder, flags, args.seed, args.repeats, args.profile) for n in sorted(args.sizes)]
    out = {
        "benchmark": "scale",
        "config": {
            "recipe_flags": flags,
            "members": 1,
            "profile": args.profile,
            "quick": args.quick,
            "seed": args.seed,
            "test_phase": "left out",
        },  # fmt: skip
        "corpora": rows,
        **({} if args.profile else summary(rows)),
        "environment": {
            **environment(),
            "load_average_before": before["load_average"],
            "cpu_busy_pct_others_before": before["cpu_busy_pct_others"],
        },  # fmt: skip
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
