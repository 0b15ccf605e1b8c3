"""What `peers.py` makes of its workers' runs: each system's useful FLOPs (the formula is in `peers.py`'s
docstring), medians over the rounds, ratios to this toolkit, shares of the measured sgemm rate, the table and
the bar chart."""

from __future__ import annotations

import statistics

WORKLOADS = ("greedy", "beam", "train")
FIGURES = {"greedy": "greedy_sentences_per_s", "beam": "beam_sentences_per_s", "train": "train_target_tokens_per_s"}


def architecture(system: str, cfg: dict) -> dict:
    """The shapes that set each system's arithmetic: gates per cell, encoder hidden per direction He, memory
    width M, attention kind, and the bridge's multiply-adds per sentence."""
    H, D = cfg["hidden"], cfg["dec_hidden"]
    arch = {"gates": 3, "enc_hidden": H, "memory": 2 * H, "attention": "additive", "bridge_macs": 2 * H * D}
    if system == "opennmt-py":  # memory as wide as the decoder: He = D / 2; ReLU(Linear(He, He)) per direction
        arch.update(enc_hidden=D // 2, memory=D, bridge_macs=2 * (D // 2) ** 2)
    elif system == "fairseq":  # LSTM, Luong general attention, a Linear(2H, D) for h0 and one for c0
        arch.update(gates=4, attention="general", bridge_macs=2 * 2 * H * D)
    return arch


def encoder_macs(arch: dict, cfg: dict) -> int:
    """Multiply-adds to encode one sentence: both directions' cells, the attention keys, the bridge."""
    E, S, He, M, A = cfg["emb"], cfg["src_len"], arch["enc_hidden"], arch["memory"], cfg["dec_hidden"]
    rnn = 2 * arch["gates"] * He * (E + He)
    keys = M * A if arch["attention"] == "additive" else 0
    return S * (rnn + keys) + arch["bridge_macs"]


def step_macs(arch: dict, cfg: dict) -> int:
    """Multiply-adds of one decoder step for one row: cell (input: embedding + fed attentional vector), query,
    scores, context, attentional vector, output layer."""
    E, S, D, V, M = cfg["emb"], cfg["src_len"], cfg["dec_hidden"], cfg["vocab"], arch["memory"]
    cell = arch["gates"] * D * (E + D + D)
    if arch["attention"] == "additive":
        query, scores = D * D, S * D
    else:
        query, scores = D * M, S * M
    return cell + query + scores + S * M + (D + M) * D + D * V


def useful_flops(system: str, kind: str, cfg: dict) -> float:
    """Useful FLOPs per unit: per sentence for decoding, per target token for training."""
    arch = architecture(system, cfg)
    enc, step = encoder_macs(arch, cfg), step_macs(arch, cfg)
    if kind == "greedy":
        return 2.0 * (enc + cfg["steps"] * step)
    if kind == "beam":
        return 2.0 * (enc + cfg["steps"] * cfg["beam"] * step)
    return 3 * 2.0 * (enc + cfg["tgt_len"] * step) / cfg["tgt_len"]  # forward + backward (2x forward)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def others_share(systems: dict) -> float | None:
    """The median share of the CPUs that other processes took during the kept runs, in percent."""
    shares = [x for f in systems.values() if "error" not in f for xs in f["others_cpu_pct_during"].values() for x in xs]
    return median([x for x in shares if x is not None])


def summarise(system: str, runs: list[dict], cfg: dict, sgemm_flops: float) -> dict:
    """One system's figures from its workers' outputs over the rounds."""
    first = runs[0]
    out = {k: first[k] for k in ("version", "parameters", "notes")}
    out["runs"] = {kind: [] for kind in WORKLOADS}
    for r in runs:
        for kind, w in r["workloads"].items():
            out["runs"][kind].append(w)
    out["checks_ok"] = all(w["ok"] for ws in out["runs"].values() for w in ws)
    out["checks"] = {kind: ws[0]["checks"] for kind, ws in out["runs"].items() if ws}
    out["peak_rss_growth_mb"], out["useful_gflop_per_unit"], out["sgemm_share"] = {}, {}, {}
    for kind, ws in out["runs"].items():
        rate = median([w["per_s"] for w in ws])
        out[FIGURES[kind]] = rate
        out["peak_rss_growth_mb"][kind] = median([w["memory"]["peak_growth_mb"] for w in ws])
        flops = useful_flops(system, kind, cfg)
        out["useful_gflop_per_unit"][kind] = flops / 1e9
        out["sgemm_share"][kind] = flops * rate / sgemm_flops if rate else None
        out.setdefault("useful_gflops_per_s", {})[kind] = flops * rate / 1e9 if rate else None
        out["others_cpu_pct_during"] = {
            **out.get("others_cpu_pct_during", {}),
            kind: [w["others_cpu_pct_during"] for w in ws],
        }
    return out


def add_ratios(systems: dict, reference: str = "seqgen") -> None:
    """Each system's figures over this toolkit's (above 1: faster than this toolkit)."""
    ref = systems.get(reference)
    for figures in systems.values():
        if "error" in figures or ref is None or "error" in ref:
            continue
        figures["ratio_to_seqgen"] = {
            kind: (figures[FIGURES[kind]] / ref[FIGURES[kind]]) if ref[FIGURES[kind]] else None for kind in WORKLOADS
        }


def table(systems: dict) -> str:
    """A Markdown table of the figures (for benchmarks/README.md)."""
    head = (
        "| system | parameters | greedy sent/s | beam 5 sent/s | train tok/s | peak RSS growth MB, greedy / beam / "
        "train | share of sgemm, greedy / beam / train | ratio to seqgen, greedy / beam / train |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    rows = [head]
    for name, f in systems.items():
        if "error" in f:
            rows.append(f"| {name} | {f['error']} | | | | | | |")
            continue
        mem = " / ".join(f"{f['peak_rss_growth_mb'][k]:.0f}" for k in WORKLOADS)
        share = " / ".join(f"{100 * f['sgemm_share'][k]:.0f}%" for k in WORKLOADS)
        ratio = " / ".join(f"{f['ratio_to_seqgen'][k]:.2f}" for k in WORKLOADS) if "ratio_to_seqgen" in f else ""
        rows.append(
            f"| {name} | {f['parameters'] / 1e6:.2f}M | {f[FIGURES['greedy']]:.1f} | {f[FIGURES['beam']]:.1f} | "
            f"{f[FIGURES['train']]:,.0f} | {mem} | {share} | {ratio} |"
        )
    return "\n".join(rows)


def plot(systems: dict, path: str, title: str) -> None:
    """Bars side by side: greedy, beam 5, training, and each one's share of sgemm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, f in systems.items() if "error" not in f]
    panels = [
        ("greedy, sentences/s", lambda f: f[FIGURES["greedy"]]),
        ("beam 5, sentences/s", lambda f: f[FIGURES["beam"]]),
        ("training, target tokens/s", lambda f: f[FIGURES["train"]]),
        ("useful FLOP/s, % of sgemm (g / b / t)", None),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.5))
    colors = ["C0" if n == "seqgen" else "C7" if n == "plain" else "C1" for n in names]
    for ax, (label, value) in zip(axes, panels):
        if value is None:
            for i, kind in enumerate(WORKLOADS):
                shares = [100 * systems[n]["sgemm_share"][kind] for n in names]
                ax.bar([x + (i - 1) * 0.27 for x in range(len(names))], shares, width=0.27, label=kind)
            ax.legend(fontsize=8)
        else:
            heights = [value(systems[n]) for n in names]
            bars = ax.bar(range(len(names)), heights, color=colors)
            ax.bar_label(bars, labels=[f"{h:,.0f}" if h >= 100 else f"{h:.1f}" for h in heights], fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
