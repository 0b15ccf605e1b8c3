"""recipes/translate.py's sequence-level phase (--seq-steps, --reward) on the tiny made-up corpus, and the sentence
rewards it trains on."""

import json

import pytest
import torch
from test_translate_recipe import TINY, corpus  # noqa: F401 (a fixture)

from core.errors import UserError
from core.tokenizers import WordTokenizer
from recipes.translate import main as translate_main
from seq2seq.rewards import sentence_reward, translation_episode
from seq2seq.translator import DecoderConfig, EncoderConfig, Translator


def records(folder, split):
    lines = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [r for r in lines if r["split"] == split]


@pytest.mark.parametrize("reward", ["bleu", "chrf"])
def test_the_phase_trains_each_member_from_its_best_checkpoint_and_the_test_reads_its_best(tmp_path, corpus, reward):  # noqa: F811
    out = tmp_path / "run"
    phase = ["--seq-steps", "4", "--reward", reward, "--seq-samples", "2", "--seq-lr", "1e-3"]
    results = translate_main(["--corpus", str(corpus), "--out", str(out), "--steps", "20", "--valid-every", "2",
                              "--members", "1", "--snapshots", "0", *TINY, *phase])  # fmt: skip
    train = records(out / "seq", "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(0 <= r["reward"] <= 1 and 0 <= r["beat_greedy"] <= 1 for r in train)
    assert (out / "seq" / "rewards.png").stat().st_size > 1000
    ce_best = max(records(out, "valid"), key=lambda r: r["bleu"])[reward]  # the checkpoint the phase starts from
    beaten = any(r[reward] > ce_best for r in records(out / "seq", "valid"))
    assert (out / "seq" / "best.pt").exists() == beaten
    assert results["checkpoints"] == [str(out / ("seq/best.pt" if beaten else "best.pt"))]


def test_sequence_flags_without_the_phase_are_one_line(tmp_path, corpus):  # noqa: F811
    with pytest.raises(UserError, match="--reward is used only with --seq-steps"):
        translate_main(["--corpus", str(corpus), "--out", str(tmp_path / "run"), *TINY, "--reward", "chrf"])
    with pytest.raises(UserError, match="--seq-samples"):
        translate_main(["--corpus", str(corpus), "--out", str(tmp_path / "run"), *TINY, "--seq-steps", "2",
                        "--seq-samples", "1", "--seq-baseline", "mean"])  # fmt: skip


def test_rewards_score_the_text_against_its_reference_and_episodes_hold_the_targets():
    tokenizer = WordTokenizer.train("the dog sees the cat .\n" * 2, max_size=20)
    model = Translator(tokenizer, tokenizer, EncoderConfig(enc_emb_dim=8, enc_hidden_dim=8), DecoderConfig(
        emb_dim=8, hidden_dim=8, attention="bahdanau"))  # fmt: skip
    right = tokenizer.encode("the dog sees the cat .")
    wrong = tokenizer.encode("cat cat")
    for metric in ("bleu", "chrf"):
        scores = sentence_reward(model, metric)([right, wrong], ["the dog sees the cat ."] * 2)
        assert scores[0] == pytest.approx(1.0) and 0 <= scores[1] < 0.5
    with pytest.raises(ValueError, match="bleu, chrf"):
        sentence_reward(model, "meteor")
    batch = model.collate([(model.source_ids("the dog ."), model.target_ids("the cat sees the dog ."))])
    episode = translation_episode(model, batch)
    assert episode.references == ["the cat sees the dog."]  # as the tokenizer gives text back
    assert episode.max_len.tolist() == [int(4 * 1.5) + 10] and isinstance(episode.ctx.h0, torch.Tensor)
