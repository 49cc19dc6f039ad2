"""The Nucleotide Transformer tokenizer, rebuilt so token ids match the published checkpoints.

NT cuts a sequence into non-overlapping 6-mers from the left; a run too short for a 6-mer
(the tail, or the bases before an ``N``) becomes single nucleotides, and every ``N`` is a
token of its own, after which 6-mer phasing restarts. ``<cls>`` is prepended, no end token
is appended, and batches are padded on the right.

The vocabulary order is the one NT was trained with, which is *not* alphabetical: the
nucleotide alphabet is ``A, T, C, G`` and the 4096 6-mers are ``itertools.product`` over that
alphabet (``AAAAAA, AAAAAT, AAAAAC, AAAAAG, AAAATA, …``). The two generations differ only in
where ``<eos>``/``<bos>`` sit:

- v1 (500M/2.5B models): ``<unk> <pad> <mask> <cls>``, 6-mers, ``A T C G N``, ``<eos> <bos>``;
  the embedding matrix has 4105 rows, so the two trailing ids are never produced.
- v2 (50M–500M multi-species): ``<unk> <pad> <mask> <cls> <eos> <bos>``, 6-mers, ``A T C G N``
  (4107 ids, all with an embedding row).

Anything other than A/C/G/T/N (after upper-casing) is an error rather than ``<unk>``: an
``<unk>`` embedding silently poisons every feature downstream, a clear error does not.

The tokenizer is pure Python (no torch) so readers and tests can use it cheaply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path

from hsg.models.errors import InvalidSequenceError, SequenceTooLongError, UnsupportedModelError

VERSIONS = ("v1", "v2")
KMER = 6
NUCLEOTIDES = ("A", "T", "C", "G")  # NT's order; the 6-mer ids depend on it
SINGLE_TOKENS = (*NUCLEOTIDES, "N")

UNK, PAD, MASK, CLS, EOS, BOS = "<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>"
SPECIAL_TOKENS = (UNK, PAD, MASK, CLS, EOS, BOS)

# Rows of the word-embedding matrix in the official checkpoints.
EMBEDDING_ROWS = {"v1": 4105, "v2": 4107}
# Longest input in tokens, <cls> included (v1: 1002 learned positions minus the 2 ESM skips).
MAX_TOKENS = {"v1": 1000, "v2": 2048}

VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"

_RUNS = re.compile(r"[ACGT]+|N")
_INVALID = re.compile(r"[^ACGTN]")


def vocabulary(version: str) -> tuple[str, ...]:
    """The full token list of an NT generation, index = token id."""
    _check_version(version)
    kmers = tuple("".join(p) for p in product(NUCLEOTIDES, repeat=KMER))
    if version == "v1":
        return (UNK, PAD, MASK, CLS, *kmers, *SINGLE_TOKENS, EOS, BOS)
    return (UNK, PAD, MASK, CLS, EOS, BOS, *kmers, *SINGLE_TOKENS)


def _check_version(version: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"unknown NT version {version!r} (expected one of {VERSIONS})")


@dataclass(frozen=True)
class TokenizedSequence:
    """One sequence as the model sees it.

    ``ids`` starts with ``<cls>``; ``tokens`` and ``offsets`` cover the content tokens only
    (no ``<cls>``), so ``tokens[j]`` is ``ids[j + 1]`` and spans bases
    ``offsets[j] = (start, end)`` (0-based, half-open) of the *original* sequence, even when
    this is a window of a longer one (``window_start`` > 0).
    """

    name: str
    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    window_start: int = 0

    def __len__(self) -> int:
        return len(self.ids)


class NucleotideTokenizer:
    """NT 6-mer tokenizer for one model generation (``"v1"`` or ``"v2"``)."""

    def __init__(self, version: str = "v2", max_tokens: int | None = None):
        _check_version(version)
        self.version = version
        self.vocab: tuple[str, ...] = vocabulary(version)
        self._ids = {tok: i for i, tok in enumerate(self.vocab)}
        self.max_tokens = MAX_TOKENS[version] if max_tokens is None else int(max_tokens)
        if self.max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2 (<cls> + one token), got {max_tokens}")
        self.unk_token_id = self._ids[UNK]
        self.pad_token_id = self._ids[PAD]
        self.mask_token_id = self._ids[MASK]
        self.cls_token_id = self._ids[CLS]

    def __repr__(self) -> str:
        return f"NucleotideTokenizer(version={self.version!r}, max_tokens={self.max_tokens})"

    @property
    def vocab_size(self) -> int:
        """Ids the tokenizer knows (4107 for both versions; v1 models embed only 4105)."""
        return len(self.vocab)

    @property
    def embedding_rows(self) -> int:
        return EMBEDDING_ROWS[self.version]

    def token_to_id(self, token: str) -> int:
        return self._ids[token]

    def id_to_token(self, token_id: int) -> str:
        return self.vocab[token_id]

    # ------------------------------------------------------------------ tokenizing

    def tokenize(
        self, sequence: str, name: str = "<sequence>"
    ) -> tuple[list[str], list[tuple[int, int]]]:
        """Content tokens and their base spans; no ``<cls>``, no length check.

        Lower case is upper-cased; any other character raises `InvalidSequenceError`.
        """
        seq = sequence.upper()
        bad = _INVALID.search(seq)
        if bad is not None:
            pos = bad.start()
            raise InvalidSequenceError(
                name,
                pos,
                bad.group(),
                f"sequence {name!r}: invalid character {bad.group()!r} at position {pos + 1} "
                "(1-based); the NT tokenizer accepts only A, C, G, T and N",
            )
        if not seq:
            raise InvalidSequenceError(name, None, None, f"sequence {name!r} is empty")
        runs = [m.span() for m in _RUNS.finditer(seq)] if "N" in seq else [(0, len(seq))]
        tokens: list[str] = []
        offsets: list[tuple[int, int]] = []
        for start, end in runs:  # list comprehensions: this runs once per sequence, per batch
            stop = start + (end - start) // KMER * KMER
            kmer_starts = range(start, stop, KMER)
            tokens += [seq[s : s + KMER] for s in kmer_starts]
            tokens += seq[stop:end]  # the short tail (or an N), one base per token
            offsets += [(s, s + KMER) for s in kmer_starts]
            offsets += [(s, s + 1) for s in range(stop, end)]
        return tokens, offsets

    def encode(self, sequence: str, name: str = "<sequence>") -> TokenizedSequence:
        """Tokenize with ``<cls>`` and check the length against ``max_tokens``."""
        tokens, offsets = self.tokenize(sequence, name)
        self._check_length(name, len(tokens) + 1, len(sequence))
        return self._build(name, tokens, offsets, 0)

    def encode_windows(
        self, sequence: str, name: str = "<sequence>", max_tokens: int | None = None
    ) -> list[TokenizedSequence]:
        """Split a long sequence into consecutive windows that each fit the model.

        Windows are cut between tokens of the whole-sequence tokenization, so every window
        re-tokenizes to exactly the tokens it was cut from (6-mer phase is preserved) and
        offsets stay relative to the whole sequence. A sequence that fits gives one window.
        """
        limit = self.max_tokens if max_tokens is None else max_tokens
        if limit < 2:
            raise ValueError(f"max_tokens must be at least 2, got {limit}")
        tokens, offsets = self.tokenize(sequence, name)
        per_window = limit - 1  # room left after <cls>
        windows = []
        for i in range(0, len(tokens), per_window):
            toks = tokens[i : i + per_window]
            offs = offsets[i : i + per_window]
            windows.append(self._build(name, toks, offs, offs[0][0]))
        return windows

    def encode_batch(
        self,
        sequences: Sequence[str],
        names: Sequence[str] | None = None,
        window: bool = False,
    ) -> list[TokenizedSequence]:
        """Encode many sequences; with ``window`` long ones become several entries."""
        names = default_names(len(sequences)) if names is None else names
        if len(names) != len(sequences):
            raise ValueError(f"{len(names)} names for {len(sequences)} sequences")
        out: list[TokenizedSequence] = []
        for seq, name in zip(sequences, names, strict=True):
            if window:
                out.extend(self.encode_windows(seq, name))
            else:
                out.append(self.encode(seq, name))
        return out

    def pad(self, encoded: Sequence[TokenizedSequence]) -> tuple[list[list[int]], list[list[bool]]]:
        """Right-pad ids to the longest entry; returns (ids, attention mask)."""
        if not encoded:
            raise ValueError("nothing to pad: the batch is empty")
        width = max(len(e.ids) for e in encoded)
        ids = [e.ids + [self.pad_token_id] * (width - len(e.ids)) for e in encoded]
        mask = [[True] * len(e.ids) + [False] * (width - len(e.ids)) for e in encoded]
        return ids, mask

    def _build(
        self, name: str, tokens: list[str], offsets: list[tuple[int, int]], window_start: int
    ) -> TokenizedSequence:
        ids = [self.cls_token_id]
        ids += map(self._ids.__getitem__, tokens)
        return TokenizedSequence(name, ids, tokens, offsets, window_start)

    def _check_length(self, name: str, n_tokens: int, n_bases: int) -> None:
        if n_tokens > self.max_tokens:
            raise SequenceTooLongError(
                name,
                n_tokens,
                self.max_tokens,
                f"sequence {name!r} ({n_bases} bp) needs {n_tokens} tokens including <cls>, "
                f"but the model takes at most {self.max_tokens} (about "
                f"{(self.max_tokens - 1) * KMER} bp of ACGT); shorten it or ask for windowing "
                "(window=True, CLI --window)",
            )

    # ------------------------------------------------------------------ files

    def save_pretrained(self, directory: str | Path) -> list[Path]:
        """Write the Hugging Face tokenizer files NT checkpoints ship with.

        ``EsmTokenizer`` reads them unchanged (tested), so a tiny model directory looks and
        tokenizes like an official one. ``eos_token`` is null, as in NT's files, which is
        what stops ``EsmTokenizer`` from appending an end token.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        vocab_path = d / VOCAB_FILE
        vocab_path.write_text("\n".join(self.vocab) + "\n", encoding="utf-8")
        special = {"cls_token": CLS, "mask_token": MASK, "pad_token": PAD, "unk_token": UNK}
        config = {
            **special,
            "eos_token": None,
            "model_max_length": self.max_tokens,
            "tokenizer_class": "EsmTokenizer",
        }
        config_path = d / TOKENIZER_CONFIG_FILE
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        special_path = d / SPECIAL_TOKENS_MAP_FILE
        special_path.write_text(json.dumps(special, indent=2, sort_keys=True) + "\n")
        return [vocab_path, config_path, special_path]

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, version: str | None = None
    ) -> NucleotideTokenizer:
        """Read ``vocab.txt`` (+ ``tokenizer_config.json``) and check it is NT's vocabulary.

        ``version`` is the generation the model config implies; without a vocab file the
        canonical vocabulary of that version is used. A vocabulary that matches neither
        generation raises `UnsupportedModelError` naming the file.
        """
        d = Path(directory)
        vocab_path = d / VOCAB_FILE
        if vocab_path.is_file():
            found = _version_of_vocab(vocab_path)
            if version is not None and found != version:
                raise UnsupportedModelError(
                    f"{vocab_path}: this is the NT {found} vocabulary but the model config "
                    f"describes an NT {version} model"
                )
            version = found
        elif version is None:
            raise UnsupportedModelError(
                f"{d}: no {VOCAB_FILE} and no model version to fall back on"
            )
        return cls(version, max_tokens=_model_max_length(d / TOKENIZER_CONFIG_FILE))


def default_names(n: int) -> list[str]:
    """Names for anonymous sequences, used in error messages (``#0``, ``#1``, …)."""
    return [f"#{i}" for i in range(n)]


def _version_of_vocab(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    tokens = tuple(line.strip() for line in lines)
    for version in VERSIONS:
        # v1 files may stop at the 4105 ids the model embeds (no trailing <eos>/<bos>)
        if tokens in (vocabulary(version), vocabulary(version)[: EMBEDDING_ROWS[version]]):
            return version
    raise UnsupportedModelError(
        f"{path}: not a Nucleotide Transformer 6-mer vocabulary ({len(tokens)} tokens, first "
        f"{list(tokens[:6])}); only the NT v1 and v2 6-mer tokenizers are supported"
    )


def _model_max_length(path: Path) -> int | None:
    """``model_max_length`` when it is a real limit (HF writes ~1e30 for "unlimited")."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("model_max_length")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise UnsupportedModelError(f"{path}: not a JSON object ({exc})") from exc
    if isinstance(value, int) and 2 <= value < 1_000_000:
        return value
    return None
