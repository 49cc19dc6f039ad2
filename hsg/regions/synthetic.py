"""A small built-in labelled dataset, so the whole pipeline runs offline with no downloads.

Positives carry a planted motif and negatives provably do not, so a working pipeline must
separate the classes, and the default motif (a telomeric-repeat G-quadruplex) links every
positive to the ``g4`` annotation through the motif scan. Backgrounds are drawn without any
G-quadruplex on either strand for the same reason: the G4 annotation then marks exactly
the positives.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from hsg.regions.motifs import find_g_quadruplexes
from hsg.regions.readers import TSV_COLUMNS
from hsg.regions.records import (
    SequenceRecord,
    build_record,
    check_bases,
    reverse_complement,
)

DEFAULT_MOTIF = "GGGTTAGGGTTAGGGTTAGGG"
SYNTHETIC_CHROM = "synth1"
_MAX_TRIES = 1000
_BASES = np.array(list("ACGT"))


def _background(rng: np.random.Generator, length: int, motif: str, avoid_g4: bool) -> str:
    """A uniform random sequence free of the motif (both strands) and, optionally, of G4s."""
    rc = reverse_complement(motif)
    for _ in range(_MAX_TRIES):
        seq = "".join(_BASES[rng.integers(0, 4, size=length)])
        if motif in seq or rc in seq:
            continue
        if avoid_g4 and find_g_quadruplexes(seq):
            continue
        return seq
    raise ValueError(  # pragma: no cover - only for absurd motif/length combinations
        f"could not draw a {length} bp background without {motif!r} in {_MAX_TRIES} tries"
    )


def make_synthetic_dataset(
    n: int = 200,
    length: int = 100,
    seed: int = 0,
    motif: str = DEFAULT_MOTIF,
    positive_fraction: float = 0.5,
    positive_label: str = "motif_positive",
    negative_label: str = "motif_negative",
    chrom: str = SYNTHETIC_CHROM,
    gap: int = 100,
) -> list[SequenceRecord]:
    """``n`` reproducible random sequences; a shuffled ``positive_fraction`` carry ``motif``.

    Each positive has the motif planted once at a random offset; negatives contain neither
    the motif nor its reverse complement. Records sit ``gap`` bp apart on the fake
    chromosome ``chrom`` so that ids are valid, distinct ``chrom:start-end(+)`` loci.
    """
    motif = motif.upper()
    check_bases(motif, "synthetic motif")
    if not motif or len(motif) > length:
        raise ValueError(f"motif length {len(motif)} must be in 1..{length}")
    if not 0 <= positive_fraction <= 1:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    rng = np.random.default_rng(seed)
    n_pos = round(n * positive_fraction)
    is_positive = np.zeros(n, dtype=bool)
    is_positive[rng.permutation(n)[:n_pos]] = True
    avoid_g4 = bool(find_g_quadruplexes(motif))
    records = []
    for i, positive in enumerate(is_positive.tolist()):
        seq = _background(rng, length, motif, avoid_g4)
        if positive:
            at = int(rng.integers(0, length - len(motif) + 1))
            seq = seq[:at] + motif + seq[at + len(motif) :]
        start = i * (length + gap)
        records.append(
            build_record(
                where=f"synthetic record {i}",
                sequence=seq,
                chrom=chrom,
                start=start,
                end=start + length,
                strand="+",
                labels=(positive_label if positive else negative_label,),
            )
        )
    return records


def write_tsv(records: Iterable[SequenceRecord], path: str | Path) -> Path:
    """Write records in the loci.tsv format (labels comma-joined) that `read_records` reads."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\t".join(TSV_COLUMNS) + "\n")
        for r in records:
            fields = [
                r.id,
                r.chrom or "",
                "" if r.start is None else str(r.start),
                "" if r.end is None else str(r.end),
                r.strand,
                r.sequence,
                ",".join(r.labels),
            ]
            fh.write("\t".join(fields) + "\n")
    return p
