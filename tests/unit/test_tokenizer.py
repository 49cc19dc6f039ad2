"""The NT tokenizer: vocabulary order, tokenization rules, limits, windows and HF files."""

from __future__ import annotations

import json
from itertools import product

import pytest

from hsg.models.errors import InvalidSequenceError, SequenceTooLongError, UnsupportedModelError
from hsg.models.tokenizer import (
    EMBEDDING_ROWS,
    MAX_TOKENS,
    NucleotideTokenizer,
    vocabulary,
)

SPECIAL_V2 = ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>"]


def test_v2_vocabulary_order():
    vocab = vocabulary("v2")
    assert len(vocab) == 4107 == EMBEDDING_ROWS["v2"]
    assert list(vocab[:6]) == SPECIAL_V2
    # 6-mers are product() over NT's alphabet A, T, C, G, not alphabetical order
    assert list(vocab[6:10]) == ["AAAAAA", "AAAAAT", "AAAAAC", "AAAAAG"]
    assert list(vocab[6 : 6 + 4096]) == ["".join(p) for p in product("ATCG", repeat=6)]
    assert list(vocab[-5:]) == ["A", "T", "C", "G", "N"]


def test_v1_vocabulary_order():
    vocab = vocabulary("v1")
    assert len(vocab) == 4107
    assert list(vocab[:4]) == SPECIAL_V2[:4]
    assert vocab[4] == "AAAAAA" and vocab[4099] == "GGGGGG"
    assert list(vocab[4100:4105]) == ["A", "T", "C", "G", "N"]
    # <eos>/<bos> sit past the 4105 embedding rows of the v1 checkpoints
    assert list(vocab[4105:]) == ["<eos>", "<bos>"] and EMBEDDING_ROWS["v1"] == 4105
    v1, v2 = NucleotideTokenizer("v1"), NucleotideTokenizer("v2")
    assert v2.token_to_id("ACGTAC") == v1.token_to_id("ACGTAC") + 2
    assert (v1.pad_token_id, v1.mask_token_id, v1.cls_token_id) == (1, 2, 3)
    assert (v2.pad_token_id, v2.mask_token_id, v2.cls_token_id) == (1, 2, 3)


@pytest.mark.parametrize(
    ("sequence", "tokens"),
    [
        ("ACGTACGTACGT", ["ACGTAC", "GTACGT"]),
        ("ACGTACGTA", ["ACGTAC", "G", "T", "A"]),  # tail shorter than 6: single nucleotides
        ("AC", ["A", "C"]),
        ("AANACGTACG", ["A", "A", "N", "ACGTAC", "G"]),  # 6-mer phase restarts after N
        ("NNACGTAC", ["N", "N", "ACGTAC"]),
        ("ACGTACN", ["ACGTAC", "N"]),
        ("acgtacgg", ["ACGTAC", "G", "G"]),  # lower case is upper-cased
    ],
)
def test_tokenization_rules(sequence, tokens):
    tok = NucleotideTokenizer("v2")
    got, offsets = tok.tokenize(sequence)
    assert got == tokens
    # spans are contiguous, cover the sequence, and spell the tokens
    assert offsets[0][0] == 0 and offsets[-1][1] == len(sequence)
    assert all(a[1] == b[0] for a, b in zip(offsets, offsets[1:], strict=False))
    assert ["".join(sequence.upper()[s:e]) for s, e in offsets] == tokens
    encoded = tok.encode(sequence, "s")
    assert encoded.ids[0] == tok.cls_token_id  # <cls> prepended, no end token
    assert encoded.ids[1:] == [tok.token_to_id(t) for t in tokens]


@pytest.mark.parametrize("bad", ["ACGTU", "ACG TA", "ACGR", "ACGT-", "ACGT\n"])
def test_invalid_character_names_sequence_and_position(bad):
    tok = NucleotideTokenizer("v1")
    with pytest.raises(InvalidSequenceError) as info:
        tok.encode(bad, "chr1:0-5(+)")
    err = info.value
    assert isinstance(err, ValueError)
    assert err.name == "chr1:0-5(+)"
    assert err.position == next(i for i, c in enumerate(bad.upper()) if c not in "ACGTN")
    assert "chr1:0-5(+)" in str(err) and f"position {err.position + 1}" in str(err)


def test_empty_sequence_is_an_error():
    with pytest.raises(InvalidSequenceError, match="empty"):
        NucleotideTokenizer("v2").encode("", "x")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_length_limit_counts_cls(version):
    tok = NucleotideTokenizer(version)
    limit = MAX_TOKENS[version]
    fits = "ACGTAC" * (limit - 1)
    assert len(tok.encode(fits).ids) == limit
    with pytest.raises(SequenceTooLongError) as info:
        tok.encode(fits + "A", "long-one")
    assert info.value.n_tokens == limit + 1 and info.value.max_tokens == limit
    assert "long-one" in str(info.value) and "window" in str(info.value)


def test_windows_preserve_tokens_and_offsets():
    tok = NucleotideTokenizer("v2", max_tokens=5)  # 4 content tokens per window
    seq = "ACGTACGTACGTAANACGTACGTACGTACGTTTTTTTGCA"
    tokens, offsets = tok.tokenize(seq)
    windows = tok.encode_windows(seq, "w")
    assert all(len(w.ids) <= 5 for w in windows)
    assert sum((w.tokens for w in windows), []) == tokens
    assert sum((w.offsets for w in windows), []) == offsets
    for w in windows:
        assert w.window_start == w.offsets[0][0]
        # each window, cut out of the sequence, tokenizes to exactly its tokens
        piece = seq[w.offsets[0][0] : w.offsets[-1][1]]
        assert tok.tokenize(piece)[0] == w.tokens
    assert len(tok.encode_windows("ACG", "short")) == 1


def test_encode_batch_and_pad():
    tok = NucleotideTokenizer("v2")
    encoded = tok.encode_batch(["ACGTACGTACGT", "A"], names=["a", "b"])
    ids, mask = tok.pad(encoded)
    assert [len(r) for r in ids] == [3, 3]
    assert ids[1] == [3, tok.token_to_id("A"), tok.pad_token_id]  # right padding
    assert mask == [[True, True, True], [True, True, False]]
    with pytest.raises(ValueError):
        tok.encode_batch(["A"], names=["a", "b"])


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_save_and_load_hf_files(tmp_path, version):
    tok = NucleotideTokenizer(version)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "vocab.txt").read_text().splitlines() == list(vocabulary(version))
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "EsmTokenizer" and config["eos_token"] is None
    assert config["model_max_length"] == MAX_TOKENS[version]
    special = json.loads((tmp_path / "special_tokens_map.json").read_text())
    assert "eos_token" not in special
    loaded = NucleotideTokenizer.from_pretrained(tmp_path)
    assert loaded.version == version and loaded.max_tokens == tok.max_tokens
    other = "v2" if version == "v1" else "v1"
    with pytest.raises(UnsupportedModelError, match="vocab.txt"):
        NucleotideTokenizer.from_pretrained(tmp_path, version=other)


def test_v1_vocabulary_without_trailing_eos_bos_is_accepted(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(vocabulary("v1")[:4105]) + "\n")
    assert NucleotideTokenizer.from_pretrained(tmp_path).version == "v1"


def test_foreign_vocabulary_is_refused(tmp_path):
    (tmp_path / "vocab.txt").write_text("<cls>\n<pad>\n<eos>\n<unk>\nL\nA\n")
    with pytest.raises(UnsupportedModelError, match="vocab.txt"):
        NucleotideTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_hf_esm_tokenizer_reads_our_files_identically(tmp_path, version):
    transformers = pytest.importorskip("transformers")
    NucleotideTokenizer(version).save_pretrained(tmp_path)
    hf = transformers.EsmTokenizer.from_pretrained(str(tmp_path))
    ours = NucleotideTokenizer.from_pretrained(tmp_path)
    for seq in ["ACGTACGTAAAN", "NACGTAC", "ATTTTTTGGGGGGCCCCCCAA", "A", "GATTACAGATTACA"]:
        assert hf(seq)["input_ids"] == ours.encode(seq).ids
