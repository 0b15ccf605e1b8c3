"""Machine translation: an RNN encoder with attention in front of the shared decoder."""

# the weight of a right-to-left model's log-probability when it reranks the n best (the recipe's and the command
# lines' default), chosen on the Ding validation split (README)
R2L_WEIGHT = 0.5

# the public names (DESIGN.md), after R2L_WEIGHT, which the modules below import from here; the command
# lines (seq2seq.bleu, seq2seq.translate) are left out, so that `python -m` runs each once
from seq2seq.data import ding_pairs, hash_split, read_pairs_tsv, read_parallel  # noqa: E402
from seq2seq.encoder import RNNEncoder  # noqa: E402
from seq2seq.translator import (EncoderConfig, SampledSubwords, Seq2Seq, Translator, build_encoder,  # noqa: E402
                                load_ensemble, load_rerankers, seq2seq_forward)

__all__ = ["R2L_WEIGHT", "ding_pairs", "hash_split", "read_pairs_tsv", "read_parallel", "RNNEncoder", "EncoderConfig",
           "SampledSubwords", "Seq2Seq", "Translator", "build_encoder", "load_ensemble", "load_rerankers",
           "seq2seq_forward"]
