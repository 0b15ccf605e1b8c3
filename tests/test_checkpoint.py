import pickle

import pytest
import torch

import core.runs
from core import CheckpointError, UserError, load_checkpoint, save_checkpoint
from core.runs import save_config


def payload(task="textgen"):
    return {
        "task": task,
        "config": {"a": 1},
        "model": {"w": torch.arange(6.0)},
        "tokenizers": {"text": {"kind": "char"}},
    }


def test_round_trip_and_no_temporary_files_left(tmp_path):
    path = save_checkpoint(tmp_path / "ck" / "model.pt", payload())
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]
    data = load_checkpoint(path, task="textgen")
    assert torch.equal(data["model"]["w"], torch.arange(6.0)) and data["config"] == {"a": 1}


def test_failed_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "model.pt", payload())
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(UserError, match=r"cannot write .*model.pt: No space left on device \(any earlier model.pt"):
        save_checkpoint(path, payload())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_failed_config_write_leaves_the_old_config_intact(tmp_path, monkeypatch):
    """A resume reads the run's flags from config.json: a write cut short must not destroy them."""
    path = save_config(tmp_path, flags={"steps": 10})
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")  # as when the data written cannot reach the disk

    monkeypatch.setattr(core.runs.os, "fsync", disk_full)
    with pytest.raises(UserError, match="cannot write .*config.json: No space left on device"):
        save_config(tmp_path, flags={"steps": 20})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_truncated_file_is_one_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", payload())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_a_flipped_bit_is_refused_by_its_checksum(tmp_path, where):
    """torch.load would read the damaged weights as they are; the archive's CRC-32 of each record catches them."""
    path = save_checkpoint(tmp_path / "model.pt", {**payload(), "model": {"w": torch.randn(64, 64)}})
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x10
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(data)
    with pytest.raises(CheckpointError, match=f"{damaged} is damaged: record .* does not match the checksum") as err:
        load_checkpoint(damaged)
    assert "\n" not in str(err.value)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.load(path, weights_only=True)["model"]["w"])


def test_foreign_files_are_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a checkpoint of this toolkit"):
        load_checkpoint(plain)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(text)
    # a pickle that would run code is refused by weights_only loading, not executed
    evil = tmp_path / "evil.pt"
    with evil.open("wb") as f:
        pickle.dump(print, f)
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)


def test_wrong_task_and_missing_file(tmp_path):
    path = save_checkpoint(tmp_path / "mt.pt", payload(task="translation"))
    with pytest.raises(CheckpointError, match="'translation' checkpoint; this needs a 'textgen'"):
        load_checkpoint(path, task="textgen")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_a_checkpoint_without_its_parts_is_refused(tmp_path):
    """The right format and task, but no tokenizers: the loader says so, rather than a KeyError later."""
    full = payload(task="textgen")
    assert load_checkpoint(save_checkpoint(tmp_path / "full.pt", full), task="textgen")["tokenizers"]
    part = {key: value for key, value in full.items() if key != "tokenizers"}
    with pytest.raises(CheckpointError, match="incomplete 'textgen' checkpoint: it lacks tokenizers"):
        load_checkpoint(save_checkpoint(tmp_path / "part.pt", part), task="textgen")
