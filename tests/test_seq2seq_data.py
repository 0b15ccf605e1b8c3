"""Parallel-corpus data: the Ding extraction rule, the hash split, the readers, and the fetch (with a fake apt-get)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from core.errors import UserError
from seq2seq.data import ding_pairs, extract_ding_pairs, hash_split, read_pairs_tsv, read_parallel

# ---- the extraction rule of docs/data.md ----


def test_keeps_whole_sentences_in_part_order():
    lines = [
        "Haus {n} | Das Haus ist sehr alt. | Ist das Haus alt? :: house | The house is very old. | Is the house old?"
    ]
    assert extract_ding_pairs(lines) == [
        ("Das Haus ist sehr alt.", "The house is very old."),
        ("Ist das Haus alt?", "Is the house old?"),
    ]


def test_skips_comments_and_lines_without_separator():
    lines = [
        "# Das ist ein Kommentar hier. :: This is a comment here.",
        "Das ist keine Wörterbuchzeile. | This is not a dictionary line.",
        "Das ist eine gute Zeile! :: This is a good line!",
    ]
    assert extract_ding_pairs(lines) == [("Das ist eine gute Zeile!", "This is a good line!")]


def test_skips_line_when_part_counts_differ():
    lines = [
        "Er kommt heute nicht mehr. | Sie geht jetzt nach Hause. :: He is not coming today.",
        "Er kommt heute nicht mehr. :: He is not coming today. | She is going home now.",
    ]
    assert extract_ding_pairs(lines) == []


def test_splits_at_first_separator_and_strips_parts():
    lines = ["   Das ist der erste Teil.   ::   The first part :: is this one.  "]
    assert extract_ding_pairs(lines) == [("Das ist der erste Teil.", "The first part :: is this one.")]


def test_needs_four_words_on_both_sides():
    lines = [
        "Das ist gut. :: That is good.",  # 3 words each: dropped
        "Das ist sehr gut. :: Good.",  # English too short: dropped
        "Das ist sehr gut. :: That is very good.",
    ]  # 4 words each: kept
    assert extract_ding_pairs(lines) == [("Das ist sehr gut.", "That is very good.")]


def test_needs_end_punctuation_on_both_sides():
    lines = [
        "Wir gehen jetzt nach Hause :: We are going home now.",
        "Wir gehen jetzt nach Hause. :: We are going home now",
        "Wir gehen jetzt nach Hause. :: We are going home now.",
        "Gehen wir jetzt nach Hause? :: Are we going home now?",
        "Geht jetzt sofort nach Hause! :: Go home right now!",
    ]
    assert [de for de, _ in extract_ding_pairs(lines)] == [
        "Wir gehen jetzt nach Hause.",
        "Gehen wir jetzt nach Hause?",
        "Geht jetzt sofort nach Hause!",
    ]


@pytest.mark.parametrize("char", list(";/[]{}"))
@pytest.mark.parametrize("side", ["de", "en"])
def test_drops_forbidden_characters(char, side):
    german, english = "Er hat das Buch gelesen.", "He has read the book."
    if side == "de":
        german = f"Er hat das {char} Buch gelesen."
    else:
        english = f"He has read {char} the book."
    assert extract_ding_pairs([f"{german} :: {english}"]) == []


def test_drops_exact_duplicates_keeping_the_first():
    lines = [
        "Die Tür schließt automatisch. :: The door closes automatically.",
        "Die Tür schließt sich automatisch. :: The door closes automatically.",
        "Die Tür schließt automatisch. :: The door shuts automatically.",
        "Tür {f} | Die Tür schließt automatisch. :: door | The door closes automatically.",
    ]
    assert extract_ding_pairs(lines) == [
        ("Die Tür schließt automatisch.", "The door closes automatically."),
        ("Die Tür schließt sich automatisch.", "The door closes automatically."),
        ("Die Tür schließt automatisch.", "The door shuts automatically."),
    ]


# ---- the hash split ----


def _pairs(n: int) -> list[tuple[str, str]]:
    return [(f"Das ist Satz Nummer {i}.", f"This is sentence number {i}.") for i in range(n)]


def test_hash_split_follows_the_sha256_rule():
    splits = hash_split(_pairs(300))
    for name, low, high in (("test", 0, 7), ("valid", 7, 14), ("train", 14, 100)):
        for german, _ in splits[name]:
            assert low <= int(hashlib.sha256(german.encode("utf-8")).hexdigest(), 16) % 100 < high
    assert all(splits[name] for name in ("train", "valid", "test"))  # precondition: every rule was exercised


def test_hash_split_is_deterministic_disjoint_and_complete():
    pairs = _pairs(2000)
    splits = hash_split(pairs)
    assert hash_split(pairs) == splits
    shuffled = hash_split(list(reversed(pairs)))  # membership depends on the sentence, not its position
    assert all(set(shuffled[name]) == set(splits[name]) for name in splits)
    merged = splits["train"] + splits["valid"] + splits["test"]
    assert sorted(merged) == sorted(pairs)
    sets = [set(splits[name]) for name in ("train", "valid", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert 0.04 < len(splits["test"]) / len(pairs) < 0.10 and 0.04 < len(splits["valid"]) / len(pairs) < 0.10
    assert splits["train"] == [p for p in pairs if p in set(splits["train"])]  # order is kept within a split


def test_hash_split_keeps_one_german_sentence_in_one_split():
    pairs = [(de, f"{en} ({variant})") for de, en in _pairs(200) for variant in range(3)]
    splits = hash_split(pairs)
    where = {}
    for name, split in splits.items():
        for german, _ in split:
            assert where.setdefault(german, name) == name


# ---- the user's own files ----


def test_read_pairs_tsv(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_bytes("Guten Morgen.\tGood morning.\r\nDanke schön! \t Thank you!".encode())
    assert read_pairs_tsv(path) == [("Guten Morgen.", "Good morning."), ("Danke schön!", "Thank you!")]


def test_read_pairs_tsv_missing_and_empty(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_pairs_tsv(tmp_path / "nope.tsv")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(UserError, match="empty"):
        read_pairs_tsv(tmp_path / "empty.tsv")


@pytest.mark.parametrize("bad_line, found", [("no tab here", "found 0 tabs"), ("a\tb\tc", "found 2 tabs")])
def test_read_pairs_tsv_bad_line_names_its_number(tmp_path, bad_line, found):
    path = tmp_path / "pairs.tsv"
    path.write_text(f"eins\tone\nzwei\ttwo\n{bad_line}\nvier\tfour\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"pairs.tsv:3: expected source<TAB>target, {found}") as err:
        read_pairs_tsv(path)
    assert "\n" not in str(err.value)


def test_read_pairs_tsv_empty_side(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("eins\tone\n\ttwo\n", encoding="utf-8")
    with pytest.raises(UserError, match="pairs.tsv:2: the source side is empty"):
        read_pairs_tsv(path)


def test_read_pairs_tsv_not_utf8(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(b"eins\tone\n" + "Grüße\tgreetings\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"pairs.tsv:2: byte 0xfc .* not UTF-8"):
        read_pairs_tsv(path)


def test_read_parallel(tmp_path):
    (tmp_path / "a.de").write_text("eins\nzwei\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("one\ntwo", encoding="utf-8")
    (tmp_path / "b.en").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "empty.en").write_text("", encoding="utf-8")
    assert read_parallel(tmp_path / "a.de", tmp_path / "a.en") == [("eins", "one"), ("zwei", "two")]
    with pytest.raises(UserError, match=r"a.de has 2 lines but .*b.en has 3"):
        read_parallel(tmp_path / "a.de", tmp_path / "b.en")
    with pytest.raises(UserError, match="empty"):
        read_parallel(tmp_path / "a.de", tmp_path / "empty.en")
    with pytest.raises(UserError, match="does not exist"):
        read_parallel(tmp_path / "nope.de", tmp_path / "a.en")


# ---- the fetch, offline: a fake apt-get hands out a small .deb built here ----

DICTIONARY = (
    "\n".join(
        ["# Version :: devel 2023-01-30", "# License :: GPL Version 2 or later"]
        + [f"Satz {{m}} | Das ist der Beispielsatz {i}. :: sentence | This is example sentence {i}." for i in range(60)]
        + ["Das ist zu kurz. :: This is short."]
    )
    + "\n"
)


def _tar_xz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _deb(path: Path) -> None:
    """Write a minimal .deb: an ar archive of debian-binary, control.tar.xz and data.tar.xz."""
    control = b"Package: trans-de-en\nVersion: 1.9-6\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
    members = {
        "debian-binary": b"2.0\n",
        "control.tar.xz": _tar_xz({"control": control}),
        "data.tar.xz": _tar_xz(
            {"usr/share/trans/de-en": DICTIONARY.encode("utf-8"), "usr/share/doc/trans-de-en/copyright": b"GPL-2+\n"}
        ),
    }
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode("ascii") + data
        out += b"\n" * (len(data) % 2)
    path.write_bytes(bytes(out))


FAKE_APT = """#!{python}
# A stand-in for apt-get: download fails until `update` has run (as on a machine without package lists).
import shutil, sys
from pathlib import Path
state = Path({state!r})
with open(state / "calls.log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if {always_fail!r}:
    sys.exit("E: Failed to fetch http://deb.debian.org/debian trans-de-en: network unreachable")
if sys.argv[1] == "update":
    (state / "updated").touch()
elif not (state / "updated").exists():
    sys.exit("E: Unable to locate package trans-de-en")
else:
    shutil.copy(state / "trans-de-en_1.9-6_all.deb", ".")
"""


def _fake_apt(tmp_path: Path, monkeypatch, always_fail: bool = False, with_dpkg: bool = False) -> Path:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    _deb(state / "trans-de-en_1.9-6_all.deb")
    apt = bin_dir / "apt-get"
    apt.write_text(FAKE_APT.format(python=sys.executable, state=str(state), always_fail=always_fail))
    apt.chmod(0o755)
    if with_dpkg:
        os.symlink(shutil.which("dpkg-deb"), bin_dir / "dpkg-deb")
    monkeypatch.setenv("PATH", str(bin_dir))  # nothing else: no real apt-get, and dpkg-deb only on request
    return state


@pytest.mark.parametrize(
    "with_dpkg",
    [
        False,
        pytest.param(
            True, marks=pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
        ),
    ],
)
def test_ding_pairs_fetches_once_then_uses_the_cache(tmp_path, monkeypatch, with_dpkg):
    state = _fake_apt(tmp_path, monkeypatch, with_dpkg=with_dpkg)
    data_dir = tmp_path / "data"
    splits = ding_pairs(data_dir)
    expected = hash_split(extract_ding_pairs(DICTIONARY.split("\n")))
    assert splits == expected and sum(len(s) for s in splits.values()) == 60
    assert all(splits[name] for name in ("train", "valid", "test"))  # precondition for a meaningful check
    calls = (state / "calls.log").read_text().splitlines()
    assert calls == ["download trans-de-en=1.9-6", "update", "download trans-de-en=1.9-6"]

    folder = data_dir / "ding-de-en-1.9-6"
    assert sorted(p.name for p in folder.iterdir()) == [
        "COPYRIGHT.txt",
        "SOURCE.txt",
        "test.de",
        "test.en",
        "train.de",
        "train.en",
        "valid.de",
        "valid.en",
    ]
    source = (folder / "SOURCE.txt").read_text()
    assert "trans-de-en 1.9-6" in source and "GPL-2+" in source and "60 " in source
    assert (folder / "valid.en").read_text(encoding="utf-8") == "".join(en + "\n" for _, en in splits["valid"])

    (tmp_path / "bin" / "apt-get").unlink()  # a second call must not fetch anything
    assert ding_pairs(data_dir) == splits
    assert len((state / "calls.log").read_text().splitlines()) == 3


def test_ding_pairs_failure_is_one_line_and_leaves_no_cache(tmp_path, monkeypatch):
    state = _fake_apt(tmp_path, monkeypatch, always_fail=True)
    data_dir = tmp_path / "data"
    with pytest.raises(UserError) as err:
        ding_pairs(data_dir)
    message = str(err.value)
    assert "\n" not in message and "--corpus PAIRS.tsv" in message and "network unreachable" in message
    assert list(data_dir.iterdir()) == []  # no half-written cache, no temporary folder
    assert (state / "calls.log").read_text().splitlines()[1] == "update"


def test_ding_pairs_without_apt_get(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="apt-get is not available.*--corpus PAIRS.tsv"):
        ding_pairs(tmp_path / "data")


def test_bible_verses_are_cleaned_and_paired_by_reference():
    from seq2seq.bible import align_verses, clean_verse

    assert clean_verse(" \u00b6 For God so loved\n the world. ") == "For God so loved the world."
    spanish = {
        ("Genesis", 1, 1): "EN el principio crió Dios los cielos y la tierra. ",
        ("Genesis", 1, 2): "Y la tierra estaba desordenada y vacía.",
        ("Romans", 16, 25): "  ",  # empty in one text: dropped
        ("Romans", 16, 26): "Mas manifestado ahora.",
    }  # missing in the other: dropped
    english = {
        ("Genesis", 1, 2): "And the earth was without form, and void.",
        ("Genesis", 1, 1): "\u00b6 In the beginning God created the heaven and the earth.",
        ("Romans", 16, 25): "Now to him that is of power.",
    }
    assert align_verses(spanish, english) == [
        ("EN el principio crió Dios los cielos y la tierra.", "In the beginning God created the heaven and the earth."),
        ("Y la tierra estaba desordenada y vacía.", "And the earth was without form, and void."),
    ]


def test_translate_recipe_reads_the_bible_corpus_with_dataset_bible(monkeypatch):
    import recipes.translate as recipe

    splits = {"train": [("uno", "one")], "valid": [("dos", "two")], "test": [("tres", "three")]}
    monkeypatch.setattr(recipe, "bible_pairs", lambda data_dir: splits)
    monkeypatch.setattr(recipe, "ding_pairs", lambda data_dir: pytest.fail("read Ding instead of the Bible"))
    assert recipe.load_pairs(recipe.build_parser().parse_args(["--dataset", "bible"])) == splits


# ---- large corpora: the TSV read a block at a time, validation and test capped, the tokenizer's sample ----


def _whole_file_pairs(path: Path) -> list[tuple[str, str]]:
    """The pairs as the reader did before it read by blocks: the whole file's text, then its lines."""
    from core.files import lines_of, read_text

    return [tuple(f.strip() for f in line.split("\t")) for line in lines_of(read_text(path))]  # type: ignore[misc]


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 24])
def test_the_tsv_read_by_blocks_gives_what_the_whole_file_gives(tmp_path, monkeypatch, block):
    import seq2seq.data

    monkeypatch.setattr(seq2seq.data, "READ_BLOCK", block)
    text = "\ufeffEins zwei.\tOne two.\r\nGrüße aus Köln!\t Greetings from Cologne!\n\ufeffDrei\tthree\r\nvier\tfour\n"
    for ending in ("", "Fünf\tfive"):  # with and without a last line end
        path = tmp_path / "pairs.tsv"
        path.write_bytes((text + ending).encode("utf-8"))
        assert read_pairs_tsv(path) == _whole_file_pairs(path)
        assert read_pairs_tsv(path)[0] == ("Eins zwei.", "One two.") and read_pairs_tsv(path)[2][0] == "\ufeffDrei"


@pytest.mark.parametrize("block", [3, 1 << 24])
def test_the_tsv_read_by_blocks_names_the_line_of_a_bad_byte_and_refuses_white_space(tmp_path, monkeypatch, block):
    import seq2seq.data

    monkeypatch.setattr(seq2seq.data, "READ_BLOCK", block)
    path = tmp_path / "pairs.tsv"
    path.write_bytes(b"eins\tone\nzwei\ttwo\ndrei\tthree\n" + "Grüße\tgreetings\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"pairs.tsv:4: byte 0xfc .* not UTF-8"):
        read_pairs_tsv(path)
    path.write_text(" \n\t\n  \n")
    with pytest.raises(UserError, match=r"pairs.tsv is empty$"):
        read_pairs_tsv(path)


def _hash(german: str) -> int:
    return int(hashlib.sha256(german.encode("utf-8")).hexdigest(), 16)


def test_a_split_within_its_cap_is_kept_as_it_is():
    from seq2seq.data import cap_split

    pairs = _pairs(50)
    assert cap_split(pairs, 50) is pairs and cap_split(pairs, 51) is pairs


def test_the_cap_keeps_the_smallest_hashes_in_their_order_and_holds_as_the_corpus_grows():
    from seq2seq.data import cap_split

    pairs = _pairs(400)
    kept = cap_split(pairs, 30)
    smallest = sorted(pairs, key=lambda p: _hash(p[0]))[:30]
    assert len(kept) == 30 and set(kept) == set(smallest)
    assert kept == [p for p in pairs if p in set(kept)]  # in input order
    grown = cap_split(pairs + _pairs(800)[400:], 30)  # more pairs can only push out ones with larger hashes
    assert set(grown) & set(pairs) <= set(kept)
    assert cap_split(list(reversed(pairs)), 30) == list(reversed(kept))  # the hash decides, not the position


def test_pairs_cut_by_the_cap_never_move_into_training():
    from seq2seq.data import cap_splits

    splits = hash_split(_pairs(2000))
    capped = cap_splits(splits, max_valid=10, max_test=20)
    assert capped["train"] == splits["train"]  # the same pairs, neither more nor fewer
    assert len(capped["valid"]) == 10 and len(capped["test"]) == 20
    assert set(capped["valid"]) < set(splits["valid"]) and set(capped["test"]) < set(splits["test"])


def _documented_split_sizes() -> dict[str, tuple[int, int, int]]:
    """train / valid / test pairs of the Ding and Bible corpora, as docs/data.md states them."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    found = re.findall(r"(\d[\d,]*) / (\d[\d,]*) / (\d[\d,]*) pairs|\((\d[\d,]*) / (\d[\d,]*) / (\d[\d,]*)\)", text)
    sizes = [tuple(int(n.replace(",", "")) for n in groups if n) for groups in found]
    assert len(sizes) == 2, sizes  # the Ding corpus, then the Bible's
    return {"ding": sizes[0], "bible": sizes[1]}  # type: ignore[dict-item]


@pytest.mark.parametrize("dataset", ["ding", "bible"])
def test_the_default_corpora_keep_their_splits_and_tokenizer_text(monkeypatch, dataset):
    """With the default flags, the recipe hands on the built-in corpora's splits exactly as they are read, and
    trains its tokenizer on every training pair, as before the caps (sizes from docs/data.md)."""
    import recipes.translate as recipe

    train, valid, test = _documented_split_sizes()[dataset]
    assert (train, valid, test) == ((12_344, 979, 1_014) if dataset == "ding" else (26_822, 2_147, 2_115))
    splits = {
        name: [(f"Satz {name} {i} .", f"sentence {name} {i} .") for i in range(n)]
        for name, n in (("train", train), ("valid", valid), ("test", test))
    }
    monkeypatch.setattr(recipe, f"{dataset}_pairs", lambda data_dir: splits)
    args = recipe.build_parser().parse_args(["--dataset", dataset])
    loaded = recipe.load_pairs(args)
    assert all(loaded[name] is splits[name] for name in splits)  # the very lists: nothing cut, nothing moved
    learnt: list[str] = []
    monkeypatch.setattr(recipe.SentencePieceTokenizer, "train", lambda text, **_: learnt.append(text) or _Tok())
    recipe.train_tokenizers(args, loaded["train"])
    whole = "\n".join(s for s, _ in splits["train"]) + "\n" + "\n".join(t for _, t in splits["train"])
    assert learnt == [whole]


class _Tok:
    def to_dict(self) -> dict:
        return {}


def test_a_large_corpus_is_capped_and_its_tokenizer_learns_from_a_spread_sample(tmp_path, monkeypatch, capsys):
    import recipes.translate as recipe

    path = tmp_path / "pairs.tsv"
    pairs = _pairs(3000)
    path.write_text("".join(f"{de}\t{en}\n" for de, en in pairs), encoding="utf-8")
    args = recipe.build_parser().parse_args(["--corpus", str(path), "--max-valid-pairs", "50", "--max-test-pairs", "60",
                                             "--tokenizer-pairs", "100"])  # fmt: skip
    loaded = recipe.load_pairs(args)
    whole = hash_split(pairs)
    assert loaded["train"] == whole["train"] and (len(loaded["valid"]), len(loaded["test"])) == (50, 60)
    printed = capsys.readouterr().out
    assert f"valid: 50 of its {len(whole['valid'])} pairs kept (--max-valid-pairs); the rest never train" in printed
    learnt: list[str] = []
    monkeypatch.setattr(recipe.SentencePieceTokenizer, "train", lambda text, **_: learnt.append(text) or _Tok())
    recipe.train_tokenizers(args, loaded["train"])
    sample = [loaded["train"][i * len(loaded["train"]) // 100] for i in range(100)]
    assert learnt == ["\n".join(s for s, _ in sample) + "\n" + "\n".join(t for _, t in sample)]
    assert "learnt from 100 of the" in capsys.readouterr().out
