import json
import warnings

import pytest

from core import BOS, EOS, PAD, UNK, CharTokenizer, SentencePieceTokenizer, UserError, WordTokenizer
from core.tokenizers import tokenizer_from_dict, train_tokenizer

UNICODE_TEXT = (
    "Grüße aus Köln — naïve café, Ωμέγα, 日本語のテキスト, emoji 🎉🙂, combining e\u0301,\n"
    "tabs\tand  double  spaces, trailing space \n\n  leading spaces; Привет, мир! 123\r\n"
)
SHAPES_TEXT = (
    "\n".join(
        f"The {w} sat on the mat and looked at the {v}."
        for w in ["cat", "dog", "bird", "fish", "fox"]
        for v in ["moon", "sun", "sea", "tree"]
    )
    * 3
)


def test_specials_are_the_same_ids_everywhere():
    assert (PAD, BOS, EOS, UNK) == (0, 1, 2, 3)
    for tok in (
        CharTokenizer.train("abc"),
        WordTokenizer.train("a b c", min_count=1),
        SentencePieceTokenizer.train(SHAPES_TEXT, vocab_size=300),
    ):
        assert tok.decode([PAD, BOS]) == "" and tok.decode([EOS]) == ""


def test_char_round_trip_on_arbitrary_unicode():
    tok = CharTokenizer.train(UNICODE_TEXT)
    ids = tok.encode(UNICODE_TEXT)
    assert len(ids) == len(UNICODE_TEXT) and UNK not in ids
    assert tok.decode(ids) == UNICODE_TEXT


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_round_trip_on_unseen_unicode(model_type):
    tok = SentencePieceTokenizer.train(SHAPES_TEXT, vocab_size=300, model_type=model_type)
    for text in (UNICODE_TEXT, "  two leading spaces", "x", "\n\n", SHAPES_TEXT[:200]):
        assert tok.decode(tok.encode(text)) == text
    # subwords really merge: common words take fewer tokens than characters
    assert len(tok.encode("The cat sat on the mat")) < len("The cat sat on the mat")


@pytest.mark.parametrize("model_type, alpha", [("unigram", 0.3), ("bpe", 0.2)])
def test_sentencepiece_samples_other_segmentations_of_the_same_text(model_type, alpha):
    import sentencepiece as spm

    tok = SentencePieceTokenizer.train(SHAPES_TEXT, vocab_size=300, model_type=model_type)
    text = "The bird sat on the mat and looked at the sea."
    spm.set_random_generator_seed(5)
    draws = [tok.sample(text, alpha) for _ in range(20)]
    assert all(tok.decode(ids) == text for ids in draws)  # every draw is a segmentation of the text
    assert len({tuple(ids) for ids in draws}) > 1  # and they differ
    spm.set_random_generator_seed(5)
    assert [tok.sample(text, alpha) for _ in range(20)] == draws  # the seed decides the draws


def test_unknown_symbols_map_to_unk_with_one_warning():
    tok = CharTokenizer.train("abc ")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = tok.encode("abxyzx c")
    assert ids.count(UNK) == 4
    assert len(caught) == 1 and "'x'" in str(caught[0].message) and "'z'" in str(caught[0].message)


def test_word_tokenizer_splits_punctuation_and_detokenizes():
    tok = WordTokenizer.train("Hello, world! Hello again, world.\nIt's here.", min_count=1)
    pieces = tok.split("Hello, world!")
    assert pieces == ["Hello", ",", "world", "!"]
    assert tok.decode(tok.encode("Hello, world! It's here.")) == "Hello, world! It's here."
    assert tok.encode("Goodbye") == [UNK]  # rare words are <unk>, silently


def test_word_vocabulary_is_capped_by_frequency():
    tok = WordTokenizer.train("a a a b b c", max_size=6, min_count=1)
    assert tok.vocab_size == 6 and "c" not in tok.index and "a" in tok.index


@pytest.mark.parametrize("level", ["char", "word", "bpe"])
def test_save_load_as_plain_data(level):
    tok = train_tokenizer(level, SHAPES_TEXT, 300)
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    sample = "The cat looked at the sea."
    assert again.encode(sample) == tok.encode(sample)
    assert again.decode(tok.encode(sample)) == tok.decode(tok.encode(sample))
    assert again.vocab_size == tok.vocab_size


def test_bad_level_and_kind_are_user_errors():
    with pytest.raises(UserError, match="--level 'phoneme'"):
        train_tokenizer("phoneme", "abc")
    with pytest.raises(UserError, match="unknown tokenizer kind"):
        tokenizer_from_dict({"kind": "bytes"})
