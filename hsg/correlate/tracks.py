"""BED tracks as per-token coverage signals, aligned to the tokens the encoder produced.

A *track* is every interval of the BED file that carries one name (column 4), e.g. all
``enhancer`` elements or all ``protein_bind:_CTCF…`` sites. Its signal on a region is, per
content token,

    coverage[token, track] = (bases of the token inside any interval of the track)
                             / (bases of the token)

where the token's bases are its ``offsets`` span ``[s, e)`` in the region's *sequence*
coordinates (6 for a 6-mer, 1 for a tail base or an N). Overlapping intervals of one track
count once. A fraction rather than "touches at all" keeps a token that only grazes an
element edge from scoring like one inside it.

Strand: a ``-`` region's sequence is the reverse complement of the reference, so sequence
base ``p`` is genomic base ``end - 1 - p``, and a genomic interval ``[g0, g1)`` inside the
region lands on sequence bases ``[end - g1, end - g0)``. For ``+`` regions it is
``[g0 - start, g1 - start)``. The mirroring is `IntervalIndex.overlaps`' (the same that
places OVERLAPS relationships in the graph), so both views of an element agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hsg.regions.intervals import IntervalIndex, read_bed_intervals
from hsg.regions.records import InputError, SequenceRecord

TRACK_KIND = "track"


@dataclass(frozen=True)
class Tracks:
    """The intervals of one BED file, grouped into named tracks."""

    index: IntervalIndex
    names: tuple[str, ...]  # sorted, distinct
    source: str  # the file name, part of every annotation id
    intervals_per_track: dict[str, int]

    def annotation_id(self, name: str) -> str:
        """Graph id of the track's (:Annotation): one node per track, not per element."""
        return f"{TRACK_KIND}:{self.source}:{name}"


def load_tracks(path: str | Path) -> Tracks:
    """Read a BED3+ file; raises `InputError` when it has no intervals."""
    p = Path(path)
    intervals = list(read_bed_intervals(p))
    if not intervals:
        raise InputError(f"{p}: track file contains no intervals")
    counts: dict[str, int] = {}
    for iv in intervals:
        counts[iv.name] = counts.get(iv.name, 0) + 1
    index = IntervalIndex(intervals, source=p.name, kind=TRACK_KIND, prefix=TRACK_KIND)
    return Tracks(
        index=index, names=tuple(sorted(counts)), source=p.name, intervals_per_track=counts
    )


@dataclass
class TrackCheck:
    """How the tracks meet the regions, found before any encoding is paid for."""

    absent_chromosomes: list[str] = field(default_factory=list)  # track chroms, no region
    overlapping: list[str] = field(default_factory=list)  # track names touching a region
    uncoordinated: list[str] = field(default_factory=list)  # region ids without coordinates


def check_tracks(tracks: Tracks, records: Iterable[SequenceRecord]) -> TrackCheck:
    """Which tracks touch any region, and which track chromosomes no region is on."""
    check = TrackCheck()
    region_chroms: set[str] = set()
    touched: set[str] = set()
    for r in records:
        if not r.has_coordinates:
            check.uncoordinated.append(r.id)
            continue
        assert r.chrom is not None and r.start is not None and r.end is not None
        region_chroms.add(r.chrom)
        touched.update(iv.name for iv in tracks.index.overlapping(r.chrom, r.start, r.end))
    check.absent_chromosomes = sorted(set(tracks.index.chromosomes) - region_chroms)
    check.overlapping = sorted(touched)
    return check


def base_coverage(record: SequenceRecord, tracks: Tracks, columns: dict[str, int]) -> np.ndarray:
    """[len(sequence), len(columns)] bool: which sequence bases lie in which track.

    Tracks not in ``columns`` are ignored; the strand mirroring is in the module docstring.
    """
    if not record.has_coordinates:
        raise InputError(f"region {record.id!r} has no chrom/start/end; cannot place tracks")
    assert record.chrom is not None and record.start is not None and record.end is not None
    if record.end - record.start != record.length:
        raise InputError(
            f"region {record.id!r}: {record.end - record.start} bp of coordinates but "
            f"{record.length} bp of sequence"
        )
    cover = np.zeros((record.length, len(columns)), dtype=bool)
    for hit in tracks.index.overlaps(record.chrom, record.start, record.end, record.strand):
        col = columns.get(hit.name)
        if col is not None:
            cover[hit.start : hit.end, col] = True
    return cover


def token_coverage(base: np.ndarray, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """[n_tokens, tracks] float32 fraction of each token's bases covered (prefix sums)."""
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    if len(spans) and (spans[:, 0].min() < 0 or spans[:, 1].max() > base.shape[0]):
        raise ValueError(f"token offsets exceed the {base.shape[0]} bases of the region")
    prefix = np.zeros((base.shape[0] + 1, base.shape[1]), dtype=np.int64)
    np.cumsum(base, axis=0, out=prefix[1:])
    covered = prefix[spans[:, 1]] - prefix[spans[:, 0]]
    width = (spans[:, 1] - spans[:, 0])[:, None]
    return (covered / width).astype(np.float32)


def region_token_coverage(
    record: SequenceRecord,
    offsets: Sequence[tuple[int, int]],
    tracks: Tracks,
    columns: dict[str, int],
) -> np.ndarray:
    """Per-token coverage of one region (or one window of it: offsets are region-relative)."""
    return token_coverage(base_coverage(record, tracks, columns), offsets)
