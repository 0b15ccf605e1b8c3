"""The shared core: tokenizers, Context, RNNDecoder, attention, search, the prompt encoder and language model, the
trainer, checkpoints and run folders."""

from core.attention import BahdanauAttention, LuongAttention
from core.batching import pad
from core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from core.context import Context
from core.decoder import DecoderConfig, DecoderState, RNNDecoder, build_decoder
from core.ensemble import Ensemble
from core.errors import UserError
from core.lm import LanguageModel, PromptEncoder, lm_forward
from core.lm_data import TokenStream
from core.search import Hypothesis, beam_search, beam_step, decode, gnmt_penalty, greedy, sample, search_with, stream
from core.search_config import SearchConfig
from core.tokenizers import (
    BOS,
    EOS,
    PAD,
    SPECIALS,
    UNK,
    CharTokenizer,
    SentencePieceTokenizer,
    WordTokenizer,
    tokenizer_from_dict,
    train_tokenizer,
)
from core.train_config import TrainConfig
from core.trainer import Trainer

# fmt: off
__all__ = [  # by the module each comes from
    "BahdanauAttention", "LuongAttention", "pad", "CheckpointError", "load_checkpoint", "save_checkpoint",
    "Context", "DecoderConfig", "DecoderState", "RNNDecoder", "build_decoder", "Ensemble", "UserError",
    "LanguageModel", "PromptEncoder", "lm_forward", "TokenStream",
    "Hypothesis", "beam_search", "beam_step", "decode", "gnmt_penalty", "greedy", "sample", "search_with", "stream",
    "SearchConfig", "BOS", "EOS", "PAD", "SPECIALS", "UNK", "CharTokenizer", "SentencePieceTokenizer",
    "WordTokenizer", "tokenizer_from_dict", "train_tokenizer", "TrainConfig", "Trainer",
]
# fmt: on
