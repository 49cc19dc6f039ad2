"""Interval annotations (RefSeq functional elements) by genomic overlap, without a database.

Per chromosome the intervals are sorted by start and carry a running maximum of their
ends. A query ``[start, end)`` then needs two binary searches: intervals at or past
``searchsorted(starts, end)`` start too late, and those before the first index whose running
maximum end exceeds ``start`` all end too early. Only the slice in between is checked, so long
intervals are found however far upstream they start, without a tree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsg.regions.annotations import AnnotationHit
from hsg.regions.readers import iter_bed_lines
from hsg.regions.records import InputError, SequenceRecord

REFSEQ_KIND = "refseq_functional_element"

_FLIP = {"+": "-", "-": "+", ".": "."}


@dataclass(frozen=True)
class Interval:
    """One annotated genomic interval, 0-based half-open."""

    chrom: str
    start: int
    end: int
    name: str
    strand: str = "."


@dataclass(frozen=True)
class _Chromosome:
    starts: np.ndarray
    ends: np.ndarray
    max_end: np.ndarray  # running maximum of ends, non-decreasing
    intervals: tuple[Interval, ...]


class IntervalIndex:
    """Overlap queries against a fixed set of intervals, returning `AnnotationHit`s."""

    def __init__(
        self,
        intervals: Iterable[Interval],
        source: str,
        kind: str = REFSEQ_KIND,
        prefix: str = "refseq",
    ) -> None:
        self.source = source
        self.kind = kind
        self.prefix = prefix
        by_chrom: dict[str, list[Interval]] = defaultdict(list)
        for iv in intervals:
            by_chrom[iv.chrom].append(iv)
        self._chroms: dict[str, _Chromosome] = {}
        for chrom, ivs in by_chrom.items():
            ivs.sort(key=lambda iv: (iv.start, iv.end))
            starts = np.fromiter((iv.start for iv in ivs), dtype=np.int64, count=len(ivs))
            ends = np.fromiter((iv.end for iv in ivs), dtype=np.int64, count=len(ivs))
            self._chroms[chrom] = _Chromosome(starts, ends, np.maximum.accumulate(ends), tuple(ivs))

    def __len__(self) -> int:
        return sum(len(c.intervals) for c in self._chroms.values())

    @property
    def chromosomes(self) -> list[str]:
        return sorted(self._chroms)

    def annotation_id(self, iv: Interval) -> str:
        """Stable node id: the same element gets the same id whichever sequence hits it."""
        return f"{self.prefix}:{iv.chrom}:{iv.start}-{iv.end}:{iv.name}"

    def overlapping(self, chrom: str, start: int, end: int) -> list[Interval]:
        """Intervals sharing at least one base with ``[start, end)`` (half-open)."""
        c = self._chroms.get(chrom)
        if c is None or start >= end:
            return []
        hi = int(np.searchsorted(c.starts, end, side="left"))
        lo = int(np.searchsorted(c.max_end, start, side="right"))
        if lo >= hi:
            return []
        picked = np.nonzero(c.ends[lo:hi] > start)[0] + lo
        return [c.intervals[i] for i in picked]

    def overlaps(self, chrom: str, start: int, end: int, strand: str = "+") -> list[AnnotationHit]:
        """Hits for the sequence ``chrom:[start, end)`` read on ``strand``.

        Hit positions are the overlap in sequence coordinates: for a ``-`` strand sequence
        position 0 is genomic ``end - 1``, so the overlap is mirrored, and the element's
        strand is flipped to stay relative to the sequence.
        """
        hits = []
        for iv in self.overlapping(chrom, start, end):
            g_start, g_end = max(iv.start, start), min(iv.end, end)
            if strand == "-":
                s, e, st = end - g_end, end - g_start, _FLIP.get(iv.strand, ".")
            else:
                s, e, st = g_start - start, g_end - start, iv.strand
            hits.append(
                AnnotationHit(
                    annotation_id=self.annotation_id(iv),
                    kind=self.kind,
                    name=iv.name,
                    source=self.source,
                    start=s,
                    end=e,
                    strand=st,
                )
            )
        return hits

    def annotate(self, record: SequenceRecord) -> list[AnnotationHit]:
        """Hits for a record; records without coordinates (plain FASTA) get none."""
        if not record.has_coordinates:
            return []
        return self.overlaps(record.chrom, record.start, record.end, record.strand)


def read_bed_intervals(path: str | Path) -> Iterable[Interval]:
    """Stream intervals from a BED3+ file (name column = element kind, default ``region``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    for bed in iter_bed_lines(p):
        cols = bed.cols
        name = cols[3] if len(cols) > 3 and cols[3] else "region"
        strand = cols[5] if len(cols) > 5 and cols[5] in ("+", "-") else "."
        yield Interval(bed.chrom, bed.start, bed.end, name, strand)


def load_bed_intervals(
    path: str | Path, kind: str = REFSEQ_KIND, prefix: str = "refseq"
) -> IntervalIndex:
    """Index a BED file of annotations (e.g. RefSeq functional elements, BED9)."""
    index = IntervalIndex(read_bed_intervals(path), source=Path(path).name, kind=kind,
                          prefix=prefix)  # fmt: skip
    if len(index) == 0:
        raise InputError(f"{path}: file contains no intervals")
    return index
