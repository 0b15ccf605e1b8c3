"""`SearchConfig`: how to decode, as one dataclass with its ranges, choices and method-bound options declared once;
task objects and command lines take it, and `keywords` turns it into the arguments of the search function it
names (core.search)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from core.errors import MAX_SEED, UserError, check_choice, check_int, check_range, flag_name

MAX_STEPS = 100_000  # tokens one search writes at most
MAX_BEAM = 1000


@dataclass
class SearchConfig:
    """How to decode: the method and its options."""

    method: str = "greedy"
    max_len: int = 200
    min_len: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    beam_size: int = 5
    length_penalty: float = 0.0
    n_best: int = 1
    no_repeat_ngram: int = 0
    repetition_penalty: float = 1.0

    CHOICES = {"method": ["greedy", "sample", "beam"]}
    # the upper bounds keep one search finite: a million steps or beams would only exhaust the memory
    RANGES = {"max_len": (1, MAX_STEPS), "min_len": (0,), "temperature": (1e-6, 1000), "top_k": (0,),
              "top_p": (0, 1, True), "seed": (0, MAX_SEED), "beam_size": (1, MAX_BEAM), "length_penalty": (-10, 10),
              "n_best": (1,), "no_repeat_ngram": (0,), "repetition_penalty": (0, None, True)}  # fmt: skip
    INTEGERS = ("max_len", "min_len", "top_k", "seed", "beam_size", "n_best", "no_repeat_ngram")
    HELP = {"method": "how the next token is chosen", "max_len": "tokens to generate at most",
            "min_len": "tokens before EOS may end the output",
            "temperature": "in [1e-6, 1000]; lower is more conservative",
            "top_k": "sample among the k most likely tokens (0: all)",
            "top_p": "sample within the smallest set of mass p, (0, 1]", "seed": "for reproducible samples",
            "length_penalty": "GNMT alpha for beam search, in [-10, 10]", "n_best": "print the n best of beam search",
            "no_repeat_ngram": "forbid repeating any n-gram of this size",
            "repetition_penalty": "> 1 discourages repeated tokens"}  # fmt: skip
    # options that one method alone reads: given with another method they would be ignored in silence
    METHOD_OF = {"temperature": "sample", "top_k": "sample", "top_p": "sample", "seed": "sample",
                 "beam_size": "beam", "length_penalty": "beam", "n_best": "beam"}  # fmt: skip

    def check(self, given: Iterable[str] = (), flags: bool = True) -> SearchConfig:
        """Every option in its range (named as its flag, or as the keyword with flags=False), and none of those
        `given` (set by the user, not by default) ignored by the method."""

        def shown(name: str) -> str:
            return flag_name(name) if flags else name

        check_choice(shown("method"), self.method, self.CHOICES["method"])
        for name in self.RANGES:
            if getattr(self, name) is not None:
                self.check_option(name, getattr(self, name), shown(name))
        check_range(shown("min_len"), self.min_len, 0, self.max_len)
        check_range(shown("n_best"), self.n_best, 1, self.beam_size)
        for name in given:
            method = self.METHOD_OF.get(name)
            if method is not None and method != self.method:
                raise UserError(
                    f"{shown(name)} is an option of {shown('method')} {method}; it does not go with "
                    f"{shown('method')} {self.method}"
                )
        return self

    @classmethod
    def check_option(cls, name: str, value: Any, shown: str = "") -> None:
        """One option within its range (an integer where it counts things: 2.5 beams would fail deep inside torch),
        named `shown` (default: its keyword)."""
        bounds: tuple[Any, ...] = (*cls.RANGES[name], None, None, False, False)  # integers' bounds are integers
        low, high, low_open, high_open = bounds[:4]
        if name in cls.INTEGERS:
            check_int(shown or name, value, low, high)
        else:
            check_range(shown or name, value, low, high, bool(low_open), bool(high_open))

    @classmethod
    def of(cls, config: SearchConfig | None, default: SearchConfig, **options: Any) -> SearchConfig:
        """`config` (or `default`) with fields replaced by keyword, checked (named as the keywords): an unknown
        option, or one the method would ignore, is refused."""
        if config is not None and not isinstance(config, SearchConfig):
            raise TypeError(f"config must be a SearchConfig, got {type(config).__name__} (options go as keywords)")
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown search option {unknown[0]!r}; the options are SearchConfig's fields")
        return replace(config or default, **options).check(options, flags=False)

    def keywords(self) -> dict[str, Any]:
        """The fields as the keyword arguments of the method's search function: those of other methods left
        out, and the seed left to the caller, who makes the generator (`seeded`)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("method", "seed") and self.METHOD_OF.get(f.name, self.method) == self.method
        }
