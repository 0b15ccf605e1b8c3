"""The captioner: a tiny made-up set learned exactly (greedy and beam), beam 1 = greedy, save -> load, attention
maps, the doubly stochastic penalty, and its checks of what it is given."""

import warnings
from functools import partial

import pytest
import torch
from PIL import Image
from shapes import write_shapes

from captioning.captioner import Captioner, ImageConfig, caption_forward, normalise, train_word_tokenizer
from captioning.training import CaptionBatches, cached_regions, examples_of, picture_inputs
from core.checkpoint import CheckpointError
from core.decoder import DecoderConfig
from core.errors import UserError
from core.tokenizers import PAD
from core.train_config import TrainConfig
from core.trainer import Trainer

SMALL = DecoderConfig(emb_dim=32, hidden_dim=64, cell="lstm", attention="bahdanau", dropout=0.0, input_feeding=False)


def captioner(records, decoder=SMALL, size=64):
    with warnings.catch_warnings():  # random backbone weights: the warning is the point of another test
        warnings.simplefilter("ignore")
        return Captioner(
            train_word_tokenizer([c for r in records for c in r.captions]),
            ImageConfig(backbone="resnet18", image_size=size),
            decoder,
            weights=None,
        )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A captioner trained on the nine shapes from cached features of a frozen random ResNet-18."""
    folder = tmp_path_factory.mktemp("shapes")
    records = write_shapes(folder / "pictures")
    torch.manual_seed(0)
    model = captioner(records)
    regions = cached_regions(model.encoder.backbone, model.image_config, [r.image for r in records], folder / "cache")
    batches = CaptionBatches(examples_of(model, records), picture_inputs(model, records, regions), 9)
    config = TrainConfig(steps=400, lr=3e-3, warmup_steps=0, schedule="constant", valid_every=1000)
    Trainer(model, caption_forward, batches, config, folder / "run", model.payload).fit()
    return model.eval(), records, regions, folder


def expected(model, records):
    return [model.tokenizer.decode(model.caption_ids(r.captions[0])[1:-1]) for r in records]


@pytest.mark.parametrize("options", [dict(method="greedy"), dict(method="beam", beam_size=3)])
def test_tiny_set_is_learned_exactly_from_features_and_from_pictures(trained, options):
    model, records, regions, _ = trained
    assert model.caption(regions, **options) == expected(model, records)
    assert model.caption([r.image for r in records], **options) == expected(model, records)


def test_beam_of_one_is_greedy(trained):
    model, records, regions, _ = trained
    untrained = captioner(records)
    for m in (model, untrained):
        greedy = m.search(regions, method="greedy")
        beam = m.search(regions, method="beam", beam_size=1)
        assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam]
        assert [g[0].log_prob for g in greedy] == pytest.approx([b[0].log_prob for b in beam], abs=1e-5)


def test_save_and_load_give_identical_captions(trained, tmp_path):
    model, records, regions, _ = trained
    model.save(tmp_path / "captioner.pt")
    loaded = Captioner.load(tmp_path / "captioner.pt")
    pictures = [r.image for r in records]
    for options in (
        dict(method="greedy"),
        dict(method="beam", beam_size=3, n_best=2),
        dict(method="sample", seed=3, temperature=1.5),
    ):
        assert loaded.caption(pictures, **options) == model.caption(pictures, **options)
    assert loaded.encoder.backbone.fingerprint == model.encoder.backbone.fingerprint  # finds the same cache


def test_attention_maps_cover_the_grid_and_sum_to_one(trained):
    model, records, _, _ = trained
    words, maps = model.attention(records[0].image, method="greedy")
    assert " ".join(words).replace(" .", ".") == expected(model, records)[0]
    assert maps.shape == (len(words), 2, 2)  # 64 px through stride 32
    assert torch.allclose(maps.sum(dim=(1, 2)), torch.ones(len(words)), atol=1e-5)


def test_doubly_stochastic_penalty_is_the_papers_and_ignores_padding():
    torch.manual_seed(1)
    model = captioner([type("R", (), {"captions": ["a b c"]})()])
    regions = torch.randn(2, 4, 512)
    tgt_in = torch.tensor([[1, 4, 5], [1, 4, PAD]])
    tgt_out = torch.tensor([[4, 5, 2], [4, 2, PAD]])
    _, _, _, penalty = caption_forward(model, (regions, tgt_in, tgt_out), None, attention_penalty=2.0)
    _, _, weights = model.decoder.unroll(tgt_in, model.context(regions))  # (B, T, S)
    coverage = torch.stack([weights[0].sum(0), weights[1, :2].sum(0)])  # row 2's padded step left out
    assert penalty.item() == pytest.approx(2.0 * ((1 - coverage) ** 2).mean().item(), rel=1e-5)
    _, _, _, off = caption_forward(model, (regions, tgt_in, tgt_out), None, attention_penalty=0.0)
    assert off.item() == 0.0


def test_the_trainer_minimises_the_penalty_too(trained):
    model, records, regions, folder = trained
    batches = CaptionBatches(examples_of(model, records), picture_inputs(model, records, regions), 9)
    trainer = Trainer(
        model,
        partial(caption_forward, attention_penalty=5.0),
        batches,
        TrainConfig(steps=1),
        folder / "penalty-run",
        model.payload,
    )
    loss, _, n, _ = trainer._loss(batches.batch(0, 0), None)
    plain, _, _, _ = Trainer(
        model,
        partial(caption_forward, attention_penalty=0.0),
        batches,
        TrainConfig(steps=1),
        folder / "plain-run",
        model.payload,
    )._loss(batches.batch(0, 0), None)
    assert loss.item() > plain.item() and n > 0


def test_normalised_captions_and_unknown_words_are_quiet(trained):
    model, _, _, _ = trained
    assert normalise("  A  Red\tSquare. ") == "a red square."
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert 3 in model.caption_ids("a purple hexagon")  # <unk>, without a warning per caption


def test_bad_input_is_named(trained, tmp_path):
    model, records, _, _ = trained
    with pytest.raises(TypeError, match="list of pictures"):
        model.caption(str(records[0].image))
    with pytest.raises(UserError, match="batch_size"):
        model.caption([records[0].image], batch_size=0)
    with pytest.raises(UserError, match="does not exist"):
        model.caption([tmp_path / "missing.png"])
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match="empty file"):
        model.caption([tmp_path / "empty.png"])
    with pytest.raises(TypeError, match="unknown search option"):
        model.caption([records[0].image], beams=3)
    with pytest.raises(TypeError, match="images must be a list of pictures, got NoneType"):
        model.caption(None)
    with pytest.raises(ValueError, match=r"taken as cached regions \(N, S, 512\), got shape \(3, 64, 64\)"):
        model.caption(torch.rand(3, 64, 64))  # one picture as a tensor, without its list
    with pytest.raises(UserError, match=r"has no pixels \(0 x 0\)"):
        model.caption([Image.new("RGB", (0, 0))])
    with pytest.raises(TypeError, match="beam_size must be an integer, got float 2.5"):
        model.caption([records[0].image], beam_size=2.5)
    with pytest.raises(TypeError, match="config must be a SearchConfig, got dict"):
        model.caption([records[0].image], {"method": "greedy"})
    with pytest.raises(UserError, match="temperature is an option of method sample; it does not go with method beam"):
        model.caption([records[0].image], temperature=0.5)  # would be ignored in silence


def test_a_generator_of_pictures_is_read_once_and_every_caption_has_a_word(trained):
    model, records, _, _ = trained
    pictures = [r.image for r in records]
    assert model.caption(p for p in pictures) == model.caption(pictures)
    untrained = captioner(records)
    assert all(caption.split() for caption in untrained.caption(pictures, method="greedy", max_len=3))


def test_a_min_count_that_leaves_no_word_is_refused():
    with pytest.raises(UserError, match="--min-count 3 leaves no word in the vocabulary"):
        train_word_tokenizer(["a red square .", "a blue circle ."], min_count=3)


def test_checkpoint_of_another_task_is_refused(tmp_path):
    from core.decoder import DecoderConfig as LMConfig
    from core.lm import LanguageModel
    from core.tokenizers import CharTokenizer

    LanguageModel(CharTokenizer.train("abc"), LMConfig(emb_dim=4, hidden_dim=8)).save(tmp_path / "lm.pt")
    with pytest.raises(CheckpointError, match="'captioning' checkpoint"):
        Captioner.load(tmp_path / "lm.pt")


def test_training_captions_beyond_the_bound_are_set_aside_with_one_warning(trained):
    model, records, _, _ = trained
    long = [records[0]._replace(captions=["a red square " * 20]), *records[1:3]]
    with pytest.warns(UserWarning, match="1 of the 3 training captions are set aside: more than --max-caption-len 10"):
        assert [row for row, _ in examples_of(model, long, max_words=10)] == [1, 2]
    with pytest.raises(UserError, match="no training caption is within --max-caption-len 1"):
        examples_of(model, long, max_words=1)
