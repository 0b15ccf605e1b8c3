"""The translation model: encoder masking, learning a tiny task, batching, save/load, command lines."""

import copy
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import sacrebleu
import torch

from core import (
    BOS,
    EOS,
    PAD,
    DecoderConfig,
    Hypothesis,
    RNNDecoder,
    SentencePieceTokenizer,
    TrainConfig,
    Trainer,
    WordTokenizer,
    greedy,
    save_checkpoint,
)
from core.batching import pad
from core.console import run_main
from core.errors import UserError
from seq2seq.batching import BucketBatches, SampledSubwords
from seq2seq.bleu import main as bleu_main
from seq2seq.encoder import RNNEncoder
from seq2seq.figures import save_attention_png
from seq2seq.rerank import load_rerankers, translate_reranked
from seq2seq.translate import main as translate_main
from seq2seq.translator import EncoderConfig, Seq2Seq, Translator, load_ensemble, seq2seq_forward

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = "a b c d e f g".split()


def reversal_pairs(n, seed):
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = [rng.choice(SYMBOLS) for _ in range(rng.randint(2, 6))]
        pairs.append((" ".join(words), " ".join(reversed(words))))
    return pairs


def tiny_translator(cell="gru", attention="bahdanau", bridge="learned"):
    tok = WordTokenizer(SYMBOLS)
    return Translator(
        tok,
        tok,
        EncoderConfig(enc_emb_dim=16, enc_hidden_dim=32, enc_cell=cell, enc_dropout=0.0, bridge=bridge),
        DecoderConfig(emb_dim=16, hidden_dim=64, cell=cell, attention=attention, dropout=0.0),
    )


def learn_reversal(model, out, steps):
    """Train `model` on the reversal task; save it to out/model.pt."""
    train = [(model.source_ids(s), model.target_ids(t)) for s, t in reversal_pairs(600, seed=1)]
    batches = BucketBatches(train, lambda e: len(e[1]), model.collate, max_tokens=400, seed=0)
    config = TrainConfig(steps=steps, lr=5e-3, warmup_steps=20, valid_every=steps, schedule="constant")
    Trainer(model, seq2seq_forward, batches, config, out, model.payload).fit()
    model.save(out / "model.pt")
    return model.eval(), out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A translator that learned to reverse short sequences. Its bridge is "zero", so the decoder starts
    knowing nothing of the source: everything it learns must come through attention."""
    torch.manual_seed(0)
    return learn_reversal(tiny_translator(bridge="zero"), tmp_path_factory.mktemp("mt"), steps=500)


def test_the_package_exports_its_public_names_and_the_network_alone():
    """docs/design.md's names import from `seq2seq` itself; `Seq2Seq` is encoder + decoder without tokenizers."""
    import seq2seq

    assert all(hasattr(seq2seq, name) for name in seq2seq.__all__)
    assert seq2seq.Translator is Translator and seq2seq.RNNEncoder is RNNEncoder and issubclass(Translator, Seq2Seq)
    torch.manual_seed(0)
    encoder = RNNEncoder(20, 8, 16, decoder_hidden=24)
    decoder = RNNDecoder(30, 8, 24, 1, cell="gru", attention="luong", memory_dim=encoder.memory_dim)
    network = seq2seq.Seq2Seq(encoder, decoder).eval()
    src, lengths, tgt_in = torch.randint(4, 20, (3, 7)), torch.tensor([7, 4, 2]), torch.randint(4, 30, (3, 5))
    logits = network(src, lengths, tgt_in)
    assert logits.shape == (3, 5, 30) and torch.equal(logits, decoder(tgt_in, encoder(src, lengths)))
    # a Translator's weights stay under encoder.* and decoder.*, so earlier checkpoints load as before
    model = tiny_translator()
    assert {key.split(".")[0] for key in model.state_dict()} == {"encoder", "decoder"}


def test_encoder_ignores_padding():
    torch.manual_seed(0)
    for cell in ("gru", "lstm"):
        enc = RNNEncoder(20, 8, 16, num_layers=2, cell=cell, decoder_hidden=24, decoder_layers=2).eval()
        src = torch.randint(4, 20, (3, 7))
        lengths = torch.tensor([7, 4, 2])
        src = src.masked_fill(torch.arange(7) >= lengths.unsqueeze(1), 0)
        ctx = enc(src, lengths)
        garbage = torch.cat([src, torch.randint(4, 20, (3, 5))], dim=1)  # more padding, not even zeros
        longer = enc(garbage, lengths)
        assert torch.allclose(ctx.h0, longer.h0, atol=1e-6)
        assert torch.allclose(ctx.memory, longer.memory[:, :7], atol=1e-6)
        assert torch.equal(ctx.memory_mask, torch.arange(7) < lengths.unsqueeze(1))
        assert torch.count_nonzero(longer.memory[1, 4:]) == 0  # padding never leaks into the memory
        alone = enc(src[2:, :2], lengths[2:])
        assert torch.allclose(ctx.h0[:, 2], alone.h0[:, 0], atol=1e-6)


@pytest.mark.parametrize("cell, layers", [("gru", 1), ("gru", 2), ("lstm", 2)])
def test_padded_reading_equals_packed_sequences_with_gradients(cell, layers):
    """Training reads each direction over the padded batch (faster backward on a CPU); search reads packed
    sequences: the same memory, final states and gradients, dropout between layers included."""
    torch.manual_seed(0)
    enc = RNNEncoder(20, 8, 16, num_layers=layers, cell=cell, dropout=0.3).train()
    emb = torch.randn(4, 7, 8, requires_grad=True)
    lengths = torch.tensor([7, 3, 1, 5])
    results = []
    for read in (enc.read_packed, enc.read_padded):
        torch.manual_seed(1)
        memory, top = read(emb, lengths)
        loss = (memory * torch.linspace(-1, 1, 32)).sum() + top.pow(2).sum()
        results.append([memory, top, *torch.autograd.grad(loss, [emb, *enc.rnn.parameters()])])
    for packed, padded in zip(*results):
        assert torch.allclose(packed, padded, atol=1e-5)
    assert torch.count_nonzero(results[1][0][1, 3:]) == 0


@pytest.mark.parametrize("bridge", ["learned", "last", "zero"])
def test_bridges_and_every_parameter_learns(bridge):
    model = (
        tiny_translator(bridge=bridge)
        if bridge != "last"
        else Translator(
            WordTokenizer(SYMBOLS),
            WordTokenizer(SYMBOLS),
            EncoderConfig(enc_emb_dim=8, enc_hidden_dim=32, enc_dropout=0.0, bridge="last"),
            DecoderConfig(emb_dim=8, hidden_dim=64, attention="luong", dropout=0.0),
        )
    )
    batch = model.collate([(model.source_ids(s), model.target_ids(t)) for s, t in reversal_pairs(4, seed=2)])
    ctx = model.encoder(batch[0], batch[1])
    assert ctx.h0.shape == (1, 4, 64)
    if bridge == "zero":
        assert torch.count_nonzero(ctx.h0) == 0
    logits, targets, _ = seq2seq_forward(model, batch, None)
    torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_tiny_task_learned_exactly_with_greedy_and_beam(trained):
    model, _ = trained
    test = reversal_pairs(60, seed=99)
    sources, targets = [s for s, _ in test], [t for _, t in test]
    for options in ({"method": "greedy"}, {"method": "beam", "beam_size": 4}):
        outputs = model.translate(sources, **options)
        exact = sum(o == t for o, t in zip(outputs, targets)) / len(test)
        assert exact == 1.0, (options, [(s, o) for s, o, t in zip(sources, outputs, targets) if o != t][:3])


def test_batched_equals_one_by_one_and_empty_lines(trained):
    model, _ = trained
    sources = [s for s, _ in reversal_pairs(12, seed=5)] + ["", "  "]
    batched = model.translate(sources, method="beam", beam_size=3, batch_size=5)
    alone = [model.translate([s], method="beam", beam_size=3)[0] for s in sources]
    assert batched == alone and batched[-2:] == ["", ""]
    nbest = model.translate_nbest(sources[:2], n_best=3, beam_size=3)
    assert [len(n) for n in nbest] == [3, 3] and nbest[0][0][1] >= nbest[0][1][1] >= nbest[0][2][1]


def test_padding_and_the_start_token_never_come_out(trained):
    model = copy.deepcopy(trained[0])
    with torch.no_grad():
        model.decoder.output.bias[[PAD, BOS]] += 50.0
    sources = [s for s, _ in reversal_pairs(6, seed=7)]
    ctx = model.encoder(*pad([model.source_ids(s) for s in sources]))
    unforbidden = greedy(model.decoder, ctx, torch.full((len(sources),), BOS), max_len=8, eos=EOS)
    assert all(h.tokens and set(h.tokens) <= {PAD, BOS} for h in unforbidden), "precondition"
    for options in (
        {"method": "greedy"},
        {"method": "sample", "seed": 1},
        {"method": "beam", "beam_size": 3, "n_best": 3},
    ):
        found = [h for hyps in model.search(sources, **options) for h in hyps]
        assert len(found) >= len(sources) and not any(set(h.tokens) & {PAD, BOS} for h in found), options


def test_attention_matrix_on_request(trained):
    model, _ = trained
    src, tgt, weights = model.attention("a b c d", method="beam", beam_size=3)
    assert src == ["a", "b", "c", "d", "</s>"] and tgt == ["d", "c", "b", "a"]
    assert weights.shape == (4, 5) and torch.allclose(weights.sum(dim=1), torch.ones(4), atol=1e-5)


def test_attention_png_draws_control_characters_as_escapes(tmp_path):
    """A byte piece may decode to a control character, which no font has a glyph for: matplotlib would warn
    (an error here) and draw a blank box; its label is the escape instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = save_attention_png(["a\x03", " b", ""], ["c"], torch.full((1, 3), 1 / 3), tmp_path / "a.png")
    assert path.stat().st_size > 0


def test_save_load_round_trip(trained):
    model, out = trained
    again = Translator.load(out / "model.pt")
    sources = [s for s, _ in reversal_pairs(10, seed=7)]
    assert again.translate(sources) == model.translate(sources)
    batch = model.collate([(model.source_ids(s), model.target_ids(s)) for s in sources])
    assert torch.equal(seq2seq_forward(model, batch, None)[0], seq2seq_forward(again, batch, None)[0])


def test_translate_command_file_nbest_and_interactive(trained, tmp_path, capsys):
    model, out = trained
    src = tmp_path / "src.txt"
    src.write_text("a b c\n\nd e\n")
    translate_main(["--checkpoint", str(out / "model.pt"), "--input", str(src), "--device", "cpu"])
    assert capsys.readouterr().out == "c b a\n\ne d\n"
    translate_main(["--checkpoint", str(out / "model.pt"), "--input", str(src), "--n-best", "2", "--device", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[0].startswith("0\t") and lines[0].endswith("\tc b a")  # 2 + 1 (empty) + 2
    assert lines[2] == "1\t0.0000\t"
    result = subprocess.run(
        [sys.executable, "-m", "seq2seq.translate", "--checkpoint", str(out / "model.pt")],
        input="a b\nc d e f\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout == "b a\nf e d c\n"
    result = subprocess.run(
        [sys.executable, "-m", "seq2seq.translate", "--checkpoint", str(out / "model.pt")],
        input=b"a b\nc \xff d\n",
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == b"b a\n"
    assert result.stderr.decode() == (
        "error: line 2 of the standard input: byte 0xff is not UTF-8 (convert the text to UTF-8)\n"
    )


def test_sampled_translations_follow_their_options_and_seed(trained, tmp_path, capsys):
    model, out = trained
    sources = [s for s, _ in reversal_pairs(40, seed=5)]
    greedy = model.translate(sources, method="greedy")
    assert model.translate(sources, method="sample", top_k=1, seed=3) == greedy  # one candidate: the argmax
    hot = [model.translate(sources, method="sample", temperature=4.0, seed=seed) for seed in (1, 1, 2)]
    assert hot[0] == hot[1] and hot[0] != hot[2] and hot[0] != greedy
    # the command line: the same draws from the same seed; top-k 1 prints the greedy output
    (tmp_path / "src.txt").write_text("\n".join(sources) + "\n")
    base = ["--checkpoint", str(out / "model.pt"), "--input", str(tmp_path / "src.txt"), "--device", "cpu"]
    printed = []
    for flags in (
        ["--method", "greedy"],
        ["--method", "sample", "--top-k", "1"],
        ["--method", "sample", "--temperature", "4", "--seed", "1"],
    ):
        translate_main([*base, *flags])
        printed.append(capsys.readouterr().out.splitlines())
    assert printed[0] == printed[1] == greedy and printed[2] == hot[0]
    # checked before the terminal is read (pytest refuses reads of stdin, so a late check fails here)
    for flags, expected in (
        (["--method", "sample", "--temperature", "0"], "--temperature = 0 is out of range"),
        (["--method", "sample", "--top-p", "0"], "--top-p = 0 is out of range; allowed: (0, 1]"),
        (["--method", "sample", "--seed", "-1"], "--seed = -1"),
        (["--temperature", "0.5"], "--temperature is an option of --method sample; it does not go with --method beam"),
        (["--method", "greedy", "--seed", "1"], "--seed is an option of --method sample"),
        (["--max-len-ratio", "-1"], "--max-len-ratio = -1"),
        (["--max-len-ratio", "1e16"], "--max-len-ratio = 1e+16 is out of range; allowed: [0, 10]"),
    ):
        with pytest.raises(SystemExit):
            run_main(translate_main, ["--checkpoint", str(out / "model.pt"), *flags])
        err = capsys.readouterr().err
        assert err.startswith(f"error: {expected}") and err.count("\n") == 1, err


def test_args_files_take_a_flag_and_its_value_on_one_line(trained, tmp_path, capsys, monkeypatch):
    """@FILE as the recipe writes it (one argument per line) and as people type it (`--flag value`, a path with
    a space, a comment, a blank line) read the same."""
    _, out = trained
    spaced = tmp_path / "a model.pt"
    spaced.write_bytes((out / "model.pt").read_bytes())
    (tmp_path / "src.txt").write_text("a b c\nd e\n")
    (tmp_path / "recipe.args").write_text(f"--checkpoint\n{spaced}\n--beam-size\n3\n")
    (tmp_path / "typed.args").write_text(f"# the model\n--checkpoint {spaced}  \n\n--beam-size\t3\n--device=cpu\n")
    (tmp_path / "quoted.args").write_text(f"--checkpoint '{spaced}'\n--beam-size \"3\"\n")
    hashed = tmp_path / "#1.pt"  # a value line that starts with #: the flag's value, not a comment
    hashed.write_bytes(spaced.read_bytes())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hashed.args").write_text(f"--checkpoint\n{hashed.relative_to(tmp_path)}\n# beam\n--beam-size\n3\n")
    for args_file in ("recipe.args", "typed.args", "quoted.args", "hashed.args"):
        translate_main([f"@{tmp_path / args_file}", "--input", str(tmp_path / "src.txt")])
        assert capsys.readouterr().out == "c b a\ne d\n", args_file
    (tmp_path / "wrong.args").write_text("--beam-size 0\n")
    with pytest.raises(SystemExit):
        run_main(translate_main, [f"@{tmp_path / 'wrong.args'}", "--checkpoint", str(spaced)])
    assert capsys.readouterr().err == "error: --beam-size = 0 is out of range; allowed: [1, 1000]\n"


def test_bfloat16_translator_still_translates_exactly(trained, tmp_path, capsys):
    """Loaded in bfloat16 (library and command lines), the trained model still solves the task exactly."""
    _, out = trained
    half = Translator.load(out / "model.pt", dtype=torch.bfloat16)
    assert half.decoder.output.weight.dtype == torch.bfloat16
    test = reversal_pairs(60, seed=99)
    for options in ({"method": "greedy"}, {"method": "beam", "beam_size": 4}):
        assert half.translate([s for s, _ in test], **options) == [t for _, t in test], options
    src, tgt, weights = half.attention("a b c", method="beam", beam_size=3)
    assert tgt == ["c", "b", "a"] and weights.dtype == torch.float32
    (tmp_path / "src.txt").write_text("a b c\n\nd e\n")
    translate_main(
        [
            "--checkpoint",
            str(out / "model.pt"),
            "--input",
            str(tmp_path / "src.txt"),
            "--device",
            "cpu",
            "--dtype",
            "bfloat16",
        ]
    )
    assert capsys.readouterr().out == "c b a\n\ne d\n"
    with pytest.raises(UserError, match="argument --dtype: invalid choice: 'float16'"):
        translate_main(["--checkpoint", str(out / "model.pt"), "--dtype", "float16"])


def test_translate_command_bad_input(trained, tmp_path, capsys):
    _, out = trained
    other = save_checkpoint(tmp_path / "lm.pt", {"task": "textgen", "config": {}, "model": {}})
    for argv, expected in (
        (["--checkpoint", str(other)], "'textgen' checkpoint"),
        (["--checkpoint", str(out / "model.pt"), "--input", str(tmp_path / "no.txt")], "no.txt"),
        (["--checkpoint", str(out / "model.pt"), "--input", str(other), "--beam-size", "0"], ""),
        (["--checkpoint", str(out / "model.pt"), "--batch-size", "0"], "--batch-size = 0"),
        (["--checkpoint", str(out / "model.pt"), "--n-best", "0"], "--n-best = 0"),
        (["--checkpoint", str(out / "model.pt"), "--n-best", "2", "--method", "greedy"], "--method greedy"),
        (
            ["--checkpoint", str(out / "model.pt"), "--length-penalty", "nan", "--input", str(tmp_path / "src.txt")],
            "--length-penalty = nan",
        ),
        ([f"@{tmp_path / 'latin1.args'}"], "not UTF-8"),
    ):
        (tmp_path / "src.txt").write_text("a b\n")
        (tmp_path / "latin1.args").write_bytes("--checkpoint\nmod\xe8le.pt\n".encode("latin-1"))
        with pytest.raises(SystemExit) as exit_info:
            run_main(translate_main, argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0]


def test_bleu_command_translates_and_scores(trained, tmp_path, capsys):
    model, out = trained
    pairs = reversal_pairs(20, seed=11)
    (tmp_path / "src").write_text("".join(s + "\n" for s, _ in pairs))
    (tmp_path / "ref").write_text("".join(t + "\n" for _, t in pairs))
    results = bleu_main(
        [
            "--checkpoint",
            str(out / "model.pt"),
            "--src",
            str(tmp_path / "src"),
            "--ref",
            str(tmp_path / "ref"),
            "--device",
            "cpu",
        ]
    )
    hyps = model.translate([s for s, _ in pairs], method="beam", beam_size=5)
    expected = sacrebleu.corpus_bleu(hyps, [[t for _, t in pairs]]).score
    assert results[0]["score"] == pytest.approx(expected) and "BLEU" in capsys.readouterr().out
    half = bleu_main(
        [
            "--checkpoint",
            str(out / "model.pt"),
            "--src",
            str(tmp_path / "src"),
            "--ref",
            str(tmp_path / "ref"),
            "--device",
            "cpu",
            "--dtype",
            "bfloat16",
        ]
    )
    assert half[0]["score"] == pytest.approx(expected)  # the task is learned exactly, in bfloat16 too


def test_shared_source_and_target_embeddings_survive_save_and_load(tmp_path):
    torch.manual_seed(0)
    tok = WordTokenizer(SYMBOLS)
    model = Translator(
        tok,
        tok,
        EncoderConfig(enc_emb_dim=8, enc_hidden_dim=16, share_embeddings=True),
        DecoderConfig(emb_dim=8, hidden_dim=16, attention="luong", tie_embeddings=True),
    )
    assert model.encoder.embedding.weight is model.decoder.embedding.weight is model.decoder.output.weight
    with torch.no_grad():
        model.encoder.embedding.weight[5] += 1.0  # one change reaches the encoder, decoder and output layer
    model.save(tmp_path / "shared.pt")
    loaded = Translator.load(tmp_path / "shared.pt")
    assert loaded.encoder.embedding.weight is loaded.decoder.embedding.weight
    assert torch.equal(loaded.decoder.output.weight, model.decoder.output.weight)
    assert loaded.translate(["a b c"], method="greedy") == model.eval().translate(["a b c"], method="greedy")
    with pytest.raises(ValueError, match="joint source and target vocabulary"):
        Translator(
            tok, WordTokenizer(SYMBOLS[:-1]), EncoderConfig(share_embeddings=True), DecoderConfig(attention="luong")
        )
    with pytest.raises(ValueError, match="enc_emb_dim == emb_dim, got 8 and 16"):
        Translator(
            tok, tok, EncoderConfig(enc_emb_dim=8, share_embeddings=True), DecoderConfig(emb_dim=16, attention="luong")
        )


def test_sampled_subwords_vary_by_epoch_and_repeat_exactly_on_resume():
    words = "Haus Baum Katze Hund Vogel Garten Fenster Tür house tree cat dog bird garden window door".split()
    rng = random.Random(0)
    pairs = [(" ".join(rng.choices(words[:8], k=4)), " ".join(rng.choices(words[8:], k=4))) for _ in range(60)]
    tok = SentencePieceTokenizer.train("\n".join(f"{s}\n{t}" for s, t in pairs), vocab_size=320, model_type="unigram")
    model = Translator(
        tok,
        tok,
        EncoderConfig(enc_emb_dim=8, enc_hidden_dim=8),
        DecoderConfig(emb_dim=8, hidden_dim=8, attention="luong"),
    )
    batches = SampledSubwords(model, pairs, max_tokens=200, alpha=0.2, seed=3)
    src, src_lengths, tgt_in, tgt_out = batches.batch(0, 1)
    again = batches.batch(0, 1)  # what a resumed run asks for
    assert all(torch.equal(a, b) for a, b in zip((src, src_lengths, tgt_in, tgt_out), again))
    texts = {tok.decode(row.tolist()) for row in src}
    assert texts <= {s for s, _ in pairs}  # each row is a whole source sentence, only segmented differently
    assert all(tok.decode(row.tolist()) in {t for _, t in pairs} for row in tgt_out)
    tgt_lengths = (tgt_out != PAD).sum(1)
    assert (tgt_in[:, 0] == BOS).all() and (tgt_out[torch.arange(len(tgt_out)), tgt_lengths - 1] == EOS).all()
    epochs = [torch.cat([batches.batch(epoch, i)[0].flatten() for i in range(len(batches))]) for epoch in (0, 1)]
    assert not torch.equal(epochs[0].sort().values, epochs[1].sort().values)  # other segmentations, not just order
    right_to_left = Translator(
        tok,
        tok,
        EncoderConfig(enc_emb_dim=8, enc_hidden_dim=8, target_order="right-to-left"),
        DecoderConfig(emb_dim=8, hidden_dim=8, attention="luong"),
    )
    backwards = SampledSubwords(right_to_left, pairs, max_tokens=200, alpha=0.2, seed=3).batch(0, 1)[3]
    for row, back, length in zip(tgt_out, backwards, tgt_lengths):  # the same segmentation, written backwards
        assert back[: length - 1].tolist() == row[: length - 1].tolist()[::-1] and back[length - 1] == EOS
    with pytest.raises(ValueError, match="need sentencepiece tokenizers, not word"):
        SampledSubwords(tiny_translator(), [("a b", "b a")], max_tokens=100, alpha=0.2)
    with pytest.raises(ValueError, match=r"in \(0, 1\), got 1.5"):
        SampledSubwords(model, pairs, max_tokens=100, alpha=1.5)


def test_ensemble_translation_library_and_command_lines(trained, tmp_path, capsys):
    model, out = trained
    copy = Translator.load(out / "model.pt")
    sources = [s for s, _ in reversal_pairs(10, seed=13)] + [""]
    for method in ("greedy", "beam"):  # two copies of one model: the same distribution, the same output
        assert model.translate(sources, method=method, ensemble_with=[copy]) == model.translate(sources, method=method)
    torch.manual_seed(5)
    untrained = tiny_translator(bridge="zero").eval()  # a different model over the same vocabulary
    mixed = model.search(sources[:4], method="beam", beam_size=3, ensemble_with=[untrained])
    alone = model.search(sources[:4], method="beam", beam_size=3)
    assert [h[0].log_prob for h in mixed] != pytest.approx([h[0].log_prob for h in alone], abs=1e-3)

    src = tmp_path / "src.txt"
    src.write_text("a b c\nd e\n")
    ck = str(out / "model.pt")
    translate_main(["--checkpoint", ck, "--checkpoint", ck, "--input", str(src), "--device", "cpu"])
    assert capsys.readouterr().out == "c b a\ne d\n"
    (tmp_path / "ref.txt").write_text("c b a\ne d\n")
    results = bleu_main(
        [
            "--checkpoint",
            ck,
            "--checkpoint",
            ck,
            "--src",
            str(src),
            "--ref",
            str(tmp_path / "ref.txt"),
            "--device",
            "cpu",
        ]
    )
    assert results[1]["name"] == "chrF2" and results[1]["score"] == pytest.approx(100.0)  # too short for BLEU's 4-grams
    capsys.readouterr()

    other_vocab = Translator(
        WordTokenizer(SYMBOLS + ["h"]), WordTokenizer(SYMBOLS + ["h"]), model.encoder_config, model.decoder_config
    )
    other_vocab.save(tmp_path / "other.pt")
    with pytest.raises(SystemExit) as exit_info:
        run_main(translate_main, ["--checkpoint", ck, "--checkpoint", str(tmp_path / "other.pt"), "--input", str(src)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other.pt cannot join" in err[0] and "vocabularies differ" in err[0]


# ---- noisy-channel reranking ----


def test_score_is_the_log_prob_that_beam_search_reports(trained):
    model, _ = trained
    sources = [s for s, _ in reversal_pairs(5, seed=4)]
    nbest = model.search(sources, method="beam", beam_size=4, n_best=4)
    finished = [(src, h) for src, hyps in zip(sources, nbest) for h in hyps if h.finished and h.tokens]
    assert len(finished) >= 8 and len({len(h.tokens) for _, h in finished}) > 1  # precondition: varied lengths
    scores = model.score(
        [src for src, _ in finished], [model.tgt_tokenizer.decode(h.tokens) for _, h in finished], batch_size=3
    )  # batches of mixed lengths: padding must not count
    assert scores == pytest.approx([h.log_prob for _, h in finished], abs=1e-4)
    with pytest.raises(ValueError, match="one target per source"):
        model.score(sources, sources[:-1])


def test_ensemble_score_is_the_log_prob_that_ensemble_beam_search_reports(trained):
    model, _ = trained
    torch.manual_seed(7)
    other = tiny_translator(bridge="zero").eval()  # untrained: its probabilities differ from the model's
    sources = [s for s, _ in reversal_pairs(5, seed=8)]
    nbest = model.search(sources, method="beam", beam_size=3, n_best=3, ensemble_with=[other])
    decode = model.tgt_tokenizer.decode  # only hypotheses whose text encodes back to their tokens (no specials)
    finished = [
        (src, h)
        for src, hyps in zip(sources, nbest)
        for h in hyps
        if h.finished and h.tokens and model.target_ids(decode(h.tokens))[1:-1] == h.tokens
    ]
    assert len(finished) >= 6
    sources, targets = [src for src, _ in finished], [model.tgt_tokenizer.decode(h.tokens) for _, h in finished]
    scores = model.score(sources, targets, batch_size=4, ensemble_with=[other])
    assert scores == pytest.approx([h.log_prob for _, h in finished], abs=1e-4)
    assert scores != pytest.approx(model.score(sources, targets), abs=1e-2)  # the other member counts


def test_reranking_keeps_the_best_combined_score(trained):
    reverse, _ = trained  # reversing is its own inverse: the trained model is a reverse model of the task
    torch.manual_seed(5)
    forward = tiny_translator().eval()  # a weak forward model whose beam order the reverse model overrides
    sources = [s for s, _ in reversal_pairs(8, seed=6)]
    nbest = forward.translate_nbest(sources, 4, beam_size=4)
    for weight in (0.0, 0.5, 3.0):
        expected = []
        for source, hyps in zip(sources, nbest):
            back = reverse.score([text for text, _ in hyps], [source] * len(hyps))
            combined = [score + weight * b for (_, score), b in zip(hyps, back)]
            expected.append(hyps[combined.index(max(combined))][0])
        assert translate_reranked(forward, sources, reverse, weight, beam_size=4) == expected
    assert translate_reranked(forward, sources, reverse, 0.0, beam_size=4) == forward.translate(sources, beam_size=4)
    assert translate_reranked(forward, sources, reverse, 3.0, beam_size=4) != forward.translate(sources, beam_size=4)


def test_reranking_length_penalty_counts_the_end_token(monkeypatch):
    """The reranking score's GNMT penalty counts EOS in a finished candidate's length, as the beam's score does."""
    model = tiny_translator().eval()
    ids = model.tgt_tokenizer.encode
    alpha = 3.0
    nbest = {  # the beam's n best, made by hand; in each, the winner with EOS counted comes second
        "a b": [Hypothesis(ids("b c"), -3.08, 0.0, True), Hypothesis(ids("a"), -2.0, 0.0, True)],
        "c d": [Hypothesis(ids("d e"), -0.95, 0.0, False), Hypothesis(ids("e f"), -1.0, 0.0, True)],
    }
    asked = []

    def search(sentences, config=None, **options):
        asked.append(options)
        return [nbest[s] for s in sentences]

    monkeypatch.setattr(model, "search", search)

    def best(hyps, eos_counts):
        scores = [h.log_prob / ((5 + len(h.tokens) + (eos_counts and h.finished)) / 6) ** alpha for h in hyps]
        return model.target_text(hyps[scores.index(max(scores))].tokens)

    expected = [best(nbest[s], eos_counts=True) for s in nbest]
    assert expected == ["a", "e f"]
    assert [best(nbest[s], eos_counts=False) for s in nbest] == ["b c", "d e"]  # precondition: EOS decides
    assert translate_reranked(model, list(nbest), beam_size=2, rerank_length_penalty=alpha) == expected
    assert asked and asked[0]["n_best"] == asked[0]["beam_size"] == 2


@pytest.fixture(scope="module")
def trained_right_to_left(tmp_path_factory):
    """The reversal task learned by a model that writes right to left: in its own order it only copies."""
    torch.manual_seed(0)
    tok = WordTokenizer(SYMBOLS)
    model = Translator(
        tok,
        tok,
        EncoderConfig(enc_emb_dim=16, enc_hidden_dim=32, enc_dropout=0.0, bridge="zero", target_order="right-to-left"),
        DecoderConfig(emb_dim=16, hidden_dim=64, attention="bahdanau", dropout=0.0),
    )
    return learn_reversal(model, tmp_path_factory.mktemp("r2l"), steps=400)


def test_right_to_left_model_writes_backwards_and_reads_out_forwards(trained, trained_right_to_left):
    model, out = trained_right_to_left
    ids = model.tgt_tokenizer.encode("a b c")
    assert model.target_ids("a b c") == [BOS, *ids[::-1], EOS]
    test = reversal_pairs(40, seed=99)
    sources, targets = [s for s, _ in test], [t for _, t in test]
    assert model.translate(sources, method="greedy") == targets
    assert model.translate(sources, method="beam", beam_size=3) == targets
    hyp = model.search(["a b c d"], method="beam", beam_size=3)[0][0]
    assert model.tgt_tokenizer.decode(hyp.tokens) == "a b c d"  # written in its own order: the source, copied
    src, tgt, weights = model.attention("a b c d", method="beam", beam_size=3)
    assert tgt == ["d", "c", "b", "a"]  # rows in reading order: "d" is the last word written and looks at "d"
    assert weights[0].argmax() == 3 and weights[-1].argmax() == 0
    nbest = model.search(sources[:6], method="beam", beam_size=3, n_best=3)
    finished = [
        (s, h)
        for s, hyps in zip(sources, nbest)
        for h in hyps  # texts that encode back to their tokens
        if h.finished and h.tokens and model.target_ids(model.target_text(h.tokens))[1:-1] == h.tokens
    ]
    assert len(finished) >= 12 and len({len(h.tokens) for _, h in finished}) > 1
    assert model.score([s for s, _ in finished], [model.target_text(h.tokens) for _, h in finished]) == pytest.approx(
        [h.log_prob for _, h in finished], abs=1e-4
    )
    again = Translator.load(out / "model.pt")
    assert again.right_to_left and again.translate(sources) == targets
    with pytest.raises(ValueError, match="same target order"):
        model.translate(sources, ensemble_with=[trained[0]])
    with pytest.raises(ValueError, match="target_order must be one of"):
        Translator(
            model.src_tokenizer, model.tgt_tokenizer, EncoderConfig(target_order="right_to_left"), model.decoder_config
        )


def test_reranking_with_reverse_and_right_to_left_models(trained, trained_right_to_left, tmp_path):
    reverse, _ = trained
    right_to_left, _ = trained_right_to_left
    torch.manual_seed(5)
    forward, _ = learn_reversal(tiny_translator(), tmp_path, steps=40)  # weak: its n best end at varied lengths
    untrained = Translator(
        right_to_left.src_tokenizer,
        right_to_left.tgt_tokenizer,
        right_to_left.encoder_config,
        right_to_left.decoder_config,
    ).eval()  # p(y | x) unlike p(x | y), as reversal makes them
    sources = [s for s, _ in reversal_pairs(8, seed=6)]
    nbest = forward.search(sources, beam_size=4, n_best=4)
    chosen = {}
    for weight, r2l_weight, r2l, alpha in (
        (0.0, 1.0, right_to_left, 0.5),
        (0.5, 2.0, right_to_left, 0.5),
        (1.0, 0.0, right_to_left, 0.5),
        (0.0, 5.0, untrained, 0.5),
        (0.0, 0.0, right_to_left, 0.0),
        (0.0, 0.0, right_to_left, 3.0),
    ):
        expected = []
        for source, hyps in zip(sources, nbest):
            texts = [forward.target_text(h.tokens) for h in hyps]
            back = reverse.score(texts, [source] * len(hyps))
            backwards = r2l.score([source] * len(hyps), texts)
            combined = [
                h.log_prob / ((5 + len(h.tokens) + 1) / 6) ** alpha + weight * b + r2l_weight * r
                for h, b, r in zip(hyps, back, backwards)
            ]
            expected.append(texts[combined.index(max(combined))])
        chosen[weight, r2l_weight, alpha] = translate_reranked(
            forward,
            sources,
            reverse,
            weight,
            beam_size=4,
            right_to_left=[r2l],
            right_to_left_weight=r2l_weight,
            rerank_length_penalty=alpha,
        )
        assert chosen[weight, r2l_weight, alpha] == expected
    assert chosen[0.0, 0.0, 0.0] != chosen[0.0, 0.0, 3.0]  # the forward score's length penalty counts
    assert translate_reranked(forward, sources, beam_size=4, rerank_length_penalty=1.0) == forward.translate(
        sources, beam_size=4
    )  # nothing else and the beam's own alpha: the beam's best
    assert translate_reranked(forward, sources, beam_size=4, right_to_left=right_to_left) != forward.translate(
        sources, beam_size=4
    )  # the right-to-left model alone overrides the beam's order


def test_rerank_flags_of_the_command_lines(trained, tmp_path, capsys):
    model, out = trained
    pairs = reversal_pairs(6, seed=12)
    (tmp_path / "src").write_text("".join(s + "\n" for s, _ in pairs))
    (tmp_path / "ref").write_text("".join(t + "\n" for _, t in pairs))
    ck = str(out / "model.pt")
    expected = translate_reranked(model, [s for s, _ in pairs], model, 0.5, beam_size=3)
    translate_main(
        [
            "--checkpoint",
            ck,
            "--input",
            str(tmp_path / "src"),
            "--beam-size",
            "3",
            "--rerank-with",
            ck,
            "--rerank-weight",
            "0.5",
            "--device",
            "cpu",
        ]
    )
    assert capsys.readouterr().out.splitlines() == expected
    results = bleu_main(
        [
            "--checkpoint",
            ck,
            "--src",
            str(tmp_path / "src"),
            "--ref",
            str(tmp_path / "ref"),
            "--beam-size",
            "3",
            "--rerank-with",
            ck,
            "--rerank-weight",
            "0.5",
            "--device",
            "cpu",
        ]
    )
    assert results[0]["score"] == pytest.approx(sacrebleu.corpus_bleu(expected, [[t for _, t in pairs]]).score)
    capsys.readouterr()
    torch.manual_seed(9)
    other = tiny_translator(bridge="zero").eval()  # a second reverse model: the two score as one ensemble
    other.save(tmp_path / "other.pt")
    translate_main(
        [
            "--checkpoint",
            ck,
            "--input",
            str(tmp_path / "src"),
            "--beam-size",
            "3",
            "--rerank-with",
            ck,
            "--rerank-with",
            str(tmp_path / "other.pt"),
            "--rerank-weight",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert capsys.readouterr().out.splitlines() == translate_reranked(
        model, [s for s, _ in pairs], [model, other], 2.0, beam_size=3
    )
    translate_main(
        [
            "--checkpoint",
            ck,
            "--input",
            str(tmp_path / "src"),
            "--beam-size",
            "3",
            "--rerank-with",
            ck,
            "--rerank-length-penalty",
            "2.5",
            "--device",
            "cpu",
        ]
    )
    assert capsys.readouterr().out.splitlines() == translate_reranked(
        model, [s for s, _ in pairs], model, beam_size=3, rerank_length_penalty=2.5
    )
    for main, argv, message in (
        (
            translate_main,
            ["--input", str(tmp_path / "src"), "--rerank-length-penalty", "nan"],
            "--rerank-length-penalty = nan",
        ),
        (translate_main, ["--input", str(tmp_path / "src"), "--method", "greedy"], "--method greedy"),
        (translate_main, ["--input", str(tmp_path / "src"), "--n-best", "2"], "--n-best"),
        (translate_main, ["--input", str(tmp_path / "src"), "--rerank-weight", "-1"], "--rerank-weight = -1"),
        (
            bleu_main,
            ["--src", str(tmp_path / "src"), "--ref", str(tmp_path / "ref"), "--method", "greedy"],
            "--method greedy",
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            run_main(main, ["--checkpoint", ck, "--rerank-with", ck, "--device", "cpu"] + argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    with pytest.raises(SystemExit):
        run_main(
            bleu_main,
            [
                "--checkpoint",
                ck,
                "--src",
                str(tmp_path / "src"),
                "--ref",
                str(tmp_path / "ref"),
                "--rerank-with",
                str(tmp_path / "none.pt"),
            ],
        )
    assert "none.pt does not exist" in capsys.readouterr().err


def test_rerank_r2l_flags_of_the_command_lines(trained, trained_right_to_left, tmp_path, capsys):
    model, out = trained
    right_to_left, r2l_out = trained_right_to_left
    torch.manual_seed(5)
    forward = tiny_translator().eval()  # weak: the rerankers change its choices
    forward.save(tmp_path / "forward.pt")
    pairs = reversal_pairs(6, seed=12)
    (tmp_path / "src").write_text("".join(s + "\n" for s, _ in pairs))
    (tmp_path / "ref").write_text("".join(t + "\n" for _, t in pairs))
    ck, r2l_ck, forward_ck = str(out / "model.pt"), str(r2l_out / "model.pt"), str(tmp_path / "forward.pt")
    expected = translate_reranked(
        forward, [s for s, _ in pairs], model, 0.5, beam_size=3, right_to_left=right_to_left, right_to_left_weight=2.0
    )
    assert expected != translate_reranked(forward, [s for s, _ in pairs], model, 0.5, beam_size=3)
    flags = [
        "--beam-size",
        "3",
        "--rerank-with",
        ck,
        "--rerank-weight",
        "0.5",
        "--rerank-r2l",
        r2l_ck,
        "--rerank-r2l-weight",
        "2",
        "--device",
        "cpu",
    ]
    translate_main(["--checkpoint", forward_ck, "--input", str(tmp_path / "src")] + flags)
    assert capsys.readouterr().out.splitlines() == expected
    results = bleu_main(
        ["--checkpoint", forward_ck, "--src", str(tmp_path / "src"), "--ref", str(tmp_path / "ref")] + flags
    )
    assert results[0]["score"] == pytest.approx(sacrebleu.corpus_bleu(expected, [[t for _, t in pairs]]).score)
    capsys.readouterr()
    for argv, message in (
        (["--rerank-r2l", ck], "writes left to right"),
        (["--rerank-r2l", r2l_ck, "--method", "greedy"], "--rerank-r2l reorders"),
        (["--rerank-r2l", r2l_ck, "--rerank-r2l-weight", "-1"], "--rerank-r2l-weight = -1"),
        (["--rerank-r2l", r2l_ck, "--n-best", "2"], "--n-best"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            run_main(
                translate_main, ["--checkpoint", forward_ck, "--input", str(tmp_path / "src"), "--device", "cpu"] + argv
            )
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_models_of_another_language_pair_are_refused(tmp_path):
    """Labelled languages (--source-lang / --target-lang) make a reverse model given for an ensemble member, or
    a forward model given as the reverse one, an error rather than silently worse translations."""
    from dataclasses import replace

    def labelled(source, target):
        model = tiny_translator()
        model.encoder_config = replace(model.encoder_config, source_lang=source, target_lang=target)
        return model

    de_en, also_de_en, en_de = labelled("de", "en"), labelled("de", "en"), labelled("en", "de")
    unknown = labelled("", "")
    assert de_en.direction == "de->en" and unknown.direction == ""
    de_en._check_joinable(also_de_en)
    de_en._check_joinable(unknown)  # older checkpoints know no languages: nothing to check
    with pytest.raises(ValueError, match="it translates en->de, and this model de->en"):
        de_en._check_joinable(en_de)
    with pytest.raises(ValueError, match="a reverse model must translate the other way"):
        translate_reranked(de_en, ["a b"], reverse=also_de_en, beam_size=2)
    assert len(translate_reranked(de_en, ["a b"], reverse=en_de, beam_size=2)) == 1
    for name, model in (("en_de", en_de), ("de_en", also_de_en)):
        model.save(tmp_path / f"{name}.pt")
    assert load_rerankers([tmp_path / "en_de.pt"], forward=de_en)["reverse"][0].direction == "en->de"
    with pytest.raises(UserError, match="de_en.pt cannot rerank this model's translations"):
        load_rerankers([tmp_path / "de_en.pt"], forward=de_en)
    with pytest.raises(UserError, match="en_de.pt cannot join"):
        load_ensemble([tmp_path / "de_en.pt", tmp_path / "en_de.pt"])


def test_bucket_batches_respect_budget_and_cover_each_example_once():
    examples = [list(range(n)) for n in [3, 9, 1, 7, 7, 2, 12, 5, 5, 8, 4, 6]]
    source = BucketBatches(examples, len, lambda rows: rows, max_tokens=16, seed=3)
    for epoch in range(2):
        seen = []
        for i in range(len(source)):
            rows = source.batch(epoch, i)
            assert max(map(len, rows)) * len(rows) <= 16 or len(rows) == 1
            seen += [tuple(r) for r in rows]
        assert sorted(seen) == sorted(tuple(e) for e in examples)
    orders = [[tuple(map(len, source.batch(e, i))) for i in range(len(source))] for e in range(3)]
    assert orders[0] == [tuple(map(len, source.batch(0, i))) for i in range(len(source))]  # deterministic
    assert len({tuple(o) for o in orders}) > 1  # reshuffled between epochs


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_a_translation_does_not_depend_on_what_shares_its_batch(method):
    """Each sentence stops at its own source's length limit, so a batch (or a server's batch of requests) gives
    every sentence the translation it gets alone."""
    torch.manual_seed(3)
    model = tiny_translator().eval()
    short, long = "a b", " ".join(SYMBOLS * 4)
    alone = model.search([short], method=method, max_len_ratio=1.0)[0]
    together = model.search([short, long], method=method, max_len_ratio=1.0)[0]
    assert [(h.tokens, h.finished) for h in alone] == [(h.tokens, h.finished) for h in together]
    assert any(not h.finished and len(h.tokens) == 3 * 1 + 10 for h in alone), "precondition: cut at its own limit"
