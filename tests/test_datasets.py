"""core.datasets: the hash split every task's data is cut by."""

from core.datasets import hash_split


def test_hash_split_key_and_percentages():
    items = [f"item {i}" for i in range(100)]
    assert hash_split(items, key=str, test=0, valid=0)["train"] == items
    assert hash_split(items, key=str, test=100, valid=0)["test"] == items
    assert hash_split(items, key=str, test=0, valid=100)["valid"] == items
