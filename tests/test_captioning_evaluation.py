"""Captioning's scores against every reference of a picture, and the nearest-neighbour baseline's search."""

import pytest
import torch

from captioning.evaluation import caption_scores, nearest_neighbour, pooled


def test_bleu_counts_every_reference_of_a_picture():
    """A caption equal to a picture's second reference scores as an exact match: BLEU reads all references."""
    references = [
        ["dogs running across grass outside", "two children play with a red ball"],
        ["an old man reading newspapers beside benches", "a cat sleeps on the warm sofa today", "cat asleep"],
        ["three boats float in the harbour at dawn"],
    ]
    second = [refs[1] if len(refs) > 1 else refs[0] for refs in references]
    scores = caption_scores(second, references)
    assert [scores[f"bleu{n}"] for n in range(1, 5)] == [100.0] * 4
    # against the first references alone, the first two captions share no word with theirs: far lower
    first_only = caption_scores(second, [refs[:1] for refs in references])
    assert first_only["bleu4"] < 50 and first_only["bleu1"] < 50
    assert scores["cider_d"] > first_only["cider_d"]


TRAIN_CAPTIONS = ["a red fox", "a green frog", "a blue whale"]
# Training pictures (M=3, S=2 regions, C=3 channels). Mean over the regions, then unit length: x, y and z.
# Pooled over the channels instead, they would point along (1, 0), (0, 1) and (1, 1) / sqrt(2).
TRAIN_REGIONS = torch.tensor(
    [
        [[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # x: "a red fox"
        [[0.0, 0.0, 0.0], [0.0, 3.0, 0.0]],  # y: "a green frog"
        [[0.0, 0.0, 2.0], [0.0, 0.0, 2.0]],  # z: "a blue whale"
    ]
)
# Test pictures: the first two identical (each closest to the other among the test pictures), the third's
# index (2) is that of a different training picture than its own neighbour; pooled over channels, the first
# two would look like the fox along (1, 0) and the third like the frog, (0.37, 0.93).
TEST_REGIONS = torch.tensor(
    [
        [[0.0, 5.0, 0.0], [0.0, 0.0, 0.0]],  # mean (0, 2.5, 0): y, the frog
        [[0.0, 5.0, 0.0], [0.0, 0.0, 0.0]],  # the same picture again
        [[1.0, 0.0, 0.2], [3.0, 0.0, 0.0]],  # mean (2, 0, 0.1): nearly x, the fox
    ]
)


def test_pooled_features_are_unit_length_means_over_the_regions():
    """`pooled` averages the S regions of each picture (not its C channels) and scales the mean to length 1."""
    features = pooled(TRAIN_REGIONS)
    assert features.shape == (3, 3)
    assert torch.allclose(features, torch.eye(3))
    assert torch.allclose(pooled(TEST_REGIONS[2:]), torch.tensor([[2.0, 0.0, 0.1]]) / (4.01**0.5))


@pytest.mark.parametrize("chunk", [256, 2, 1])
def test_nearest_neighbour_finds_the_closest_training_picture(chunk):
    """Each test picture gets the caption of the training picture nearest by pooled feature (mean over regions,
    unit length), searched among the training pictures only, whatever the test set holds."""
    found = nearest_neighbour(TRAIN_REGIONS, TRAIN_CAPTIONS, TEST_REGIONS, chunk=chunk)
    assert found == ["a green frog", "a green frog", "a red fox"]
    # a test picture identical to a training picture finds that picture's caption
    assert nearest_neighbour(TRAIN_REGIONS, TRAIN_CAPTIONS, TRAIN_REGIONS.flip(0), chunk=chunk) == TRAIN_CAPTIONS[::-1]
    with pytest.raises(ValueError, match="3 training pictures but 2 captions"):
        nearest_neighbour(TRAIN_REGIONS, TRAIN_CAPTIONS[:2], TEST_REGIONS)
