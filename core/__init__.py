"""The shared core: tokenizers, Context, RNNDecoder, attention, search, prompt encoder, trainer, checkpoints."""
from core.allocator import keep_freed_memory
from core.attention import BahdanauAttention, LuongAttention
from core.batching import BucketBatches, TokenStream, pad
from core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from core.errors import UserError
from core.context import Context
from core.decoder import DecoderConfig, DecoderState, RNNDecoder, build_decoder
from core.ensemble import Ensemble
from core.lm import LanguageModel, PromptEncoder, lm_forward
from core.search import Hypothesis, beam_search, generate, gnmt_penalty, greedy, sample, stream
from core.tokenizers import (BOS, EOS, PAD, SPECIALS, UNK, CharTokenizer, SentencePieceTokenizer, WordTokenizer,
                             tokenizer_from_dict, train_tokenizer)
from core.trainer import TrainConfig, Trainer

__all__ = [
    "BahdanauAttention", "LuongAttention", "BucketBatches", "TokenStream", "pad", "CheckpointError",
    "load_checkpoint", "save_checkpoint", "UserError", "Context", "DecoderConfig", "DecoderState", "RNNDecoder",
    "build_decoder", "Ensemble", "LanguageModel", "PromptEncoder", "lm_forward", "Hypothesis", "beam_search",
    "generate", "gnmt_penalty", "greedy", "sample", "stream", "BOS", "EOS", "PAD", "SPECIALS", "UNK", "CharTokenizer",
    "SentencePieceTokenizer", "WordTokenizer", "tokenizer_from_dict", "train_tokenizer", "TrainConfig", "Trainer",
    "keep_freed_memory",
]
