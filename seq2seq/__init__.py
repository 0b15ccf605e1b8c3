"""Machine translation: an RNN encoder with attention in front of the shared decoder."""

from seq2seq.batching import BucketBatches, SampledSubwords
from seq2seq.data import ding_pairs, hash_split, read_pairs_tsv, read_parallel
from seq2seq.encoder import RNNEncoder
from seq2seq.rerank import R2L_WEIGHT, RERANK_LENGTH_PENALTY, RERANK_WEIGHT, load_rerankers, translate_reranked
from seq2seq.translator import EncoderConfig, Seq2Seq, Translator, build_encoder, load_ensemble, seq2seq_forward

__all__ = [
    "RERANK_LENGTH_PENALTY", "RERANK_WEIGHT", "R2L_WEIGHT", "BucketBatches", "SampledSubwords", "ding_pairs",
    "hash_split", "read_pairs_tsv", "read_parallel", "RNNEncoder", "EncoderConfig", "Seq2Seq", "Translator",
    "build_encoder", "load_ensemble", "load_rerankers", "seq2seq_forward", "translate_reranked",
]  # fmt: skip
