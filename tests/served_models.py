"""Three small trained checkpoints for the server's tests and its screenshots: a character model of a few
lines of verse, a translator that reverses words, and a captioner of coloured shapes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
from shapes import write_shapes
from test_seq2seq import learn_reversal, tiny_translator

from captioning.captioner import Captioner, ImageConfig, caption_forward, train_word_tokenizer
from captioning.training import CaptionBatches, cached_regions, examples_of, picture_inputs
from core import BOS, CharTokenizer, DecoderConfig, LanguageModel
from core.lm import lm_forward
from core.lm_data import TokenStream
from core.train_config import TrainConfig
from core.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
VERSE = (
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date.\n"
)


def quiet(steps: int) -> TrainConfig:
    return TrainConfig(steps=steps, lr=1e-2, warmup_steps=0, valid_every=steps, schedule="constant")


def train_textgen(folder: Path) -> Path:
    torch.manual_seed(0)
    tokenizer = CharTokenizer.train(VERSE)
    model = LanguageModel(tokenizer, DecoderConfig(emb_dim=16, hidden_dim=96, cell="lstm", dropout=0.0))
    ids = [BOS] + tokenizer.encode(VERSE * 4)
    Trainer(model, lm_forward, TokenStream(ids, 4, 64), quiet(200), folder / "textgen-run", model.payload).fit()
    return model.save(folder / "textgen.pt")


def train_translator(folder: Path) -> Path:
    torch.manual_seed(0)
    learn_reversal(tiny_translator(), folder / "translate-run", steps=200)
    return folder / "translate-run" / "model.pt"


def train_captioner(folder: Path) -> Path:
    torch.manual_seed(0)
    records = write_shapes(folder / "shapes")
    decoder = DecoderConfig(emb_dim=32, hidden_dim=64, cell="lstm", attention="bahdanau", dropout=0.0)
    with warnings.catch_warnings():  # random backbone weights, as the captioner's own tests use
        warnings.simplefilter("ignore")
        words = train_word_tokenizer([c for r in records for c in r.captions])
        model = Captioner(words, ImageConfig(backbone="resnet18", image_size=128), decoder, weights=None)
    regions = cached_regions(model.encoder.backbone, model.image_config, [r.image for r in records], folder / "cache")
    batches = CaptionBatches(examples_of(model, records), picture_inputs(model, records, regions), 9)
    config = TrainConfig(steps=300, lr=3e-3, warmup_steps=0, schedule="constant", valid_every=1000)
    Trainer(model, caption_forward, batches, config, folder / "caption-run", model.payload).fit()
    return model.save(folder / "caption.pt")


def train_all(folder: Path) -> dict[str, Path]:
    """The three checkpoints in `folder`, by the server's task names."""
    return {"textgen": train_textgen(folder), "translation": train_translator(folder),
            "captioning": train_captioner(folder)}  # fmt: skip


def serve(*argv: str) -> subprocess.Popen:
    """`python recipes/serve.py ARGV` as a process of its own, its output readable."""
    return subprocess.Popen([sys.executable, str(ROOT / "recipes" / "serve.py"), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_until_up(process: subprocess.Popen, address: str, seconds: float = 60) -> None:
    """Until the server at `address` answers /api/health: it prints its address just before uvicorn binds."""
    import httpx2 as httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited: {process.stderr.read() if process.stderr else ''}"
        try:
            if httpx.get(address + "/api/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"no answer from {address} in {seconds} s")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
