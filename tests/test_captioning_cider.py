"""CIDEr-D against the reference implementation's figures (pycocoevalcap 1.2, cider.Cider) on a small case."""

import math

import pytest

from captioning.cider import cider_d

REFERENCES = [
    ["a red square .", "a square in red ."],
    ["a blue circle .", "the circle is blue ."],
    ["a green triangle .", "a small green triangle ."],
    ["a red circle .", "one red circle ."],
]
CANDIDATES = ["a red square .", "a blue blue blue circle .", "a triangle", "a red square ."]
# printed by pycocoevalcap 1.2: Cider().compute_score({i: refs}, {i: [cand]}) on the lists above
REFERENCE_CORPUS = 2.507176445109919
REFERENCE_PER_PICTURE = [5.918844230388945, 1.8432504315536382, 1.4730052243222826, 0.7936058941748096]


def test_matches_the_reference_implementation():
    corpus, per_picture = cider_d(CANDIDATES, REFERENCES)
    assert corpus == pytest.approx(REFERENCE_CORPUS, rel=1e-12)
    assert per_picture == pytest.approx(REFERENCE_PER_PICTURE, rel=1e-12)


def test_repeating_a_word_does_not_pay():
    # one picture: every idf is log(1/1) = 0, so add a second picture to give the n-grams weight
    _, (honest, _) = cider_d(["a blue circle .", "x"], [["a blue circle ."], ["a red square ."]])
    _, (repeated, _) = cider_d(["a blue blue blue circle .", "x"], [["a blue circle ."], ["a red square ."]])
    assert repeated < honest and math.isfinite(repeated)


def test_an_exact_caption_beats_a_wrong_one():
    _, (exact, wrong) = cider_d(["a cat", "a cat"], [["a cat"], ["a dog"]])
    assert exact > 0 and wrong < exact


@pytest.mark.parametrize(
    "candidates, references, message",
    [
        (["a"], [["a"], ["b"]], "1 candidates but 2"),
        (["a"], [[]], "at least one reference"),
    ],
)
def test_bad_input_is_named(candidates, references, message):
    with pytest.raises(ValueError, match=message):
        cider_d(candidates, references)
