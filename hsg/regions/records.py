"""The one record type every reader yields, and the checks that make it trustworthy.

Everything downstream (tokenizer, encoder, graph writer) assumes an upper-case ACGTN
sequence already on the strand named by the record, so those guarantees are enforced once,
here, instead of being re-checked (or silently violated) in each consumer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

VALID_BASES = frozenset("ACGTN")
STRANDS = ("+", "-")

# Longest id, label or chromosome name accepted, in UTF-8 bytes. Neo4j refuses to index a
# property value whose key is over about 8 kB (the range-index key size limit; the exact
# figure depends on version and page size), and that failure comes from the database in the
# middle of a run, after earlier batches were committed. Half of it leaves room for Neo4j's
# own key encoding and for the composite indexes these values also sit in (chrom with
# start), so anything accepted here is indexable; no real id or label comes near it.
MAX_KEY_BYTES = 4000

_COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")
_INVALID_BASE = re.compile(r"[^ACGTN]")


class InputError(ValueError):
    """Bad user input; the message always names the file and the line (or record).

    One exception type so that the CLI can print the message and exit 1 without a traceback,
    while library users can still catch it as a ``ValueError``.
    """


def reverse_complement(sequence: str) -> str:
    """Reverse complement of an ACGTN sequence (case is kept)."""
    return sequence.translate(_COMPLEMENT)[::-1]


def make_id(chrom: str, start: int, end: int, strand: str) -> str:
    """Canonical id ``chr1:100-200(+)``: 0-based half-open, the form the graph keys on."""
    return f"{chrom}:{start}-{end}({strand})"


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, for naming values in messages."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_key(value: str, what: str, where: str) -> None:
    """Raise `InputError` if ``value`` cannot be a graph key: blank, or over `MAX_KEY_BYTES`.

    ``what`` names the field ("id", "label", "chrom"); ``where`` is the "file, line" prefix.
    Checked while reading, so an unindexable value fails validation instead of a write.
    """
    if not value.strip():
        raise InputError(f"{where}: empty {what}")
    n = len(value.encode("utf-8"))
    if n > MAX_KEY_BYTES:
        raise InputError(
            f"{where}: {what} {shorten(value)!r} is {n} bytes long (UTF-8); "
            f"the limit is {MAX_KEY_BYTES} bytes (MAX_KEY_BYTES, Neo4j index keys)"
        )


def check_bases(sequence: str, where: str, offset: int = 0) -> None:
    """Raise `InputError` at the first character outside ACGTN.

    ``where`` is the "file, line" (or record) prefix for the message; ``offset`` is added to
    the reported 1-based position so callers that validate line by line (FASTA) can report
    the position within the whole record.
    """
    bad = _INVALID_BASE.search(sequence)
    if bad is not None:
        pos = offset + bad.start() + 1
        raise InputError(
            f"{where}: invalid base {bad.group()!r} at position {pos} "
            "(only A, C, G, T and N are allowed)"
        )


def gc_fraction(sequence: str) -> float:
    """GC fraction over the called bases (N excluded), 0.0 when nothing is called."""
    gc = sequence.count("G") + sequence.count("C")
    called = gc + sequence.count("A") + sequence.count("T")
    return gc / called if called else 0.0


@dataclass(frozen=True)
class SequenceRecord:
    """One region to encode: where it comes from, what it is, and which phenotypes it has.

    ``sequence`` is upper-case ACGTN and already on ``strand`` (reverse-complemented for
    ``-``). Coordinates are 0-based half-open; FASTA input without coordinates leaves
    ``chrom``/``start``/``end`` as None and uses the FASTA name as ``id``.
    """

    id: str
    chrom: str | None
    start: int | None
    end: int | None
    strand: str
    sequence: str
    labels: tuple[str, ...] = ()
    # "file, line N" of the row it was read from: lets a later check name both rows
    where: str | None = field(default=None, compare=False, repr=False)

    @property
    def length(self) -> int:
        return len(self.sequence)

    @property
    def gc(self) -> float:
        return gc_fraction(self.sequence)

    @property
    def has_coordinates(self) -> bool:
        return self.chrom is not None and self.start is not None and self.end is not None


def build_record(
    *,
    where: str,
    sequence: str,
    chrom: str | None = None,
    start: int | None = None,
    end: int | None = None,
    strand: str = "+",
    id: str | None = None,
    labels: tuple[str, ...] = (),
    reverse_complement_minus: bool = False,
) -> SequenceRecord:
    """Normalise and validate raw reader fields into a `SequenceRecord`.

    ``reverse_complement_minus`` is set by readers whose sequence comes from the reference
    ``+`` strand (BED + FASTA); TSV and FASTA sequences are already on their strand. The id,
    chromosome and every label must be non-blank and at most `MAX_KEY_BYTES` UTF-8 bytes.
    """
    if strand not in STRANDS:
        raise InputError(f"{where}: strand must be '+' or '-', got {strand!r}")
    seq = sequence.upper()
    if not seq:
        raise InputError(f"{where}: empty sequence")
    check_bases(seq, where)
    if reverse_complement_minus and strand == "-":
        seq = reverse_complement(seq)
    if chrom is not None:
        check_key(chrom, "chrom", where)
    if id is None:
        if chrom is None or start is None or end is None:
            raise InputError(f"{where}: a record needs an id or chrom, start and end")
        id = make_id(chrom, start, end, strand)
    check_key(id, "id", where)
    for label in labels:
        check_key(label, "label", where)
    return SequenceRecord(
        id=id,
        chrom=chrom,
        start=start,
        end=end,
        strand=strand,
        sequence=seq,
        labels=labels,
        where=where,
    )
