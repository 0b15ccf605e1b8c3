"""What one request may ask for, and how requests are batched: a dataclass whose fields are the server's flags."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    max_body_bytes: int = 1 << 20  # a JSON request (a picture's upload has its own bound)
    max_sentences: int = 64
    max_chars: int = 2000  # per prompt or sentence; a translator's --max-source-len applies too
    max_len: int = 500  # tokens one output may have
    max_beam: int = 16
    max_samples: int = 8
    max_picture_bytes: int = 10 << 20
    max_pixels: int = 40_000_000  # refused before the picture is decoded (decompression bombs)
    max_queue: int = 256  # requests waiting for a model; beyond it, 503 with Retry-After
    max_batch: int = 32  # inputs (sentences, samples, pictures) decoded together; 1: each request alone
    max_wait_ms: float = 5.0  # how long a request waits for others to join its batch

    RANGES = {"max_body_bytes": (1,), "max_sentences": (1,), "max_chars": (1,), "max_len": (1, 100_000),
              "max_beam": (1, 1000), "max_samples": (1,), "max_picture_bytes": (1,), "max_pixels": (1,),
              "max_queue": (1,), "max_batch": (1,), "max_wait_ms": (0, 10_000)}  # fmt: skip
    HELP = {"max_body_bytes": "bytes of a JSON request at most", "max_sentences": "sentences per request",
            "max_chars": "characters per prompt or sentence", "max_len": "tokens one output may have",
            "max_beam": "largest beam_size", "max_samples": "largest num_samples", "max_picture_bytes":
            "bytes of an uploaded picture", "max_pixels": "pixels of a picture, checked before it is decoded",
            "max_queue": "requests waiting per model before 503",
            "max_batch": "inputs of requests that arrive together decoded as one batch (1: each request alone)",
            "max_wait_ms": "how long a request waits for others to join its batch"}  # fmt: skip
