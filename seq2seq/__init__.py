"""Machine translation: an RNN encoder with attention in front of the shared decoder."""

# How the n best are reranked by default (the library's, the recipe's and the command lines'), chosen on the Ding
# validation split (README): the highest log p(y | x) / GNMT penalty(|y|, RERANK_LENGTH_PENALTY)
# + RERANK_WEIGHT x log p(x | y) under reverse models + R2L_WEIGHT x log p(y | x) under right-to-left ones.
RERANK_LENGTH_PENALTY = 0.5
RERANK_WEIGHT = 0.5
R2L_WEIGHT = 0.5

# the public names (DESIGN.md), after the constants, which the modules below import from here; the command
# lines (seq2seq.bleu, seq2seq.translate) are left out, so that `python -m` runs each once
from seq2seq.data import ding_pairs, hash_split, read_pairs_tsv, read_parallel  # noqa: E402
from seq2seq.encoder import RNNEncoder  # noqa: E402
from seq2seq.translator import (EncoderConfig, SampledSubwords, Seq2Seq, Translator, build_encoder,  # noqa: E402
                                load_ensemble, load_rerankers, seq2seq_forward)

__all__ = ["RERANK_LENGTH_PENALTY", "RERANK_WEIGHT", "R2L_WEIGHT", "ding_pairs", "hash_split", "read_pairs_tsv",
           "read_parallel", "RNNEncoder", "EncoderConfig", "SampledSubwords", "Seq2Seq", "Translator", "build_encoder",
           "load_ensemble", "load_rerankers", "seq2seq_forward"]
