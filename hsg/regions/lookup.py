"""BED regions read in one place, their bases looked up in another (a parallel worker).

`hsg ingest --engine ray` reads a BED file in its driver, which only parses lines —
coordinates, names, labels: cheap — and leaves fetching the bases from the indexed reference,
and checking them, to parallel workers. Every check the sequential reader (`read_records`,
then `tile_records` with ``--window``) makes is made here once, by one side or the other and
for each region in the reader's order, so that a bad input is refused with the reader's own
message:

- the driver: the BED line, the chromosome, the reference's bounds, the label column and
  the strand (`read_bed_regions`: the reader's code), then the windows (`lookup_rows`);
- a worker (`lookup_record`): the bases, then the chromosome, id and label keys
  (`build_record`: the reader's code).

With ``--window`` the driver cuts a region into windows on coordinates alone. The reader
checks a region's bases as a whole before tiling it; here each window's row checks one part
of its region — from the window's own start to the next window's start (to the region's end
for the last one) — so the parts tile the region exactly, including bases between windows
that ``stride > size`` skips; a row also checks the rest of its window where windows
overlap. The invalid base at the lowest position is the one the reader names, with the
reader's message (`problem_key` orders what the workers find).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsg.regions.readers import BedRegion
from hsg.regions.records import (
    InputError,
    SequenceRecord,
    build_record,
    check_bases,
    make_id,
    reverse_complement,
)
from hsg.regions.windows import check_window, iter_window_offsets, window_span

if TYPE_CHECKING:
    import pyfaidx


class InvalidBases(InputError):
    """An invalid base in a region, at genomic position ``at``; ranks before the region's
    other problems, as `build_record` checks the bases first."""

    def __init__(self, message: str, at: int = 0) -> None:  # default: unpickles from args
        super().__init__(message)
        self.at = at


_INVALID_BASE = re.compile(r"[^ACGTN]")  # what `check_bases` refuses


def lookup_rows(
    regions: Iterable[BedRegion], window: int | None = None, stride: int | None = None
) -> Iterator[dict[str, Any]]:
    """One row per record the reader would yield (per window with ``window``), in its order.

    ``window`` and ``stride`` are checked at the call, as `tile_records` checks them."""
    size = None
    if window is not None:
        size, stride = check_window(window, stride)
    return _rows(regions, size, stride or size)


def _rows(
    regions: Iterable[BedRegion], size: int | None, stride: int | None
) -> Iterator[dict[str, Any]]:
    for ordinal, region in enumerate(regions):
        if size is None or region.end - region.start <= size:
            yield _row(ordinal, region, region.start, region.end, region.end)
        else:
            assert stride is not None
            yield from _windows(ordinal, region, size, stride)


def _windows(ordinal: int, region: BedRegion, size: int, stride: int) -> Iterator[dict[str, Any]]:
    """The rows of `region`'s windows, in `tile_records`' order, each with its part to check."""
    start, end = region.start, region.end
    spans = (window_span(start, end, region.strand, a, b)
             for a, b in iter_window_offsets(end - start, size, stride))  # fmt: skip
    if region.strand == "-":  # windows run down the genome: the next start up is the last one's
        up = end
        for w_start, w_end in spans:
            yield _row(ordinal, region, w_start, w_end, up)
            up = w_start
        return
    last = None  # windows run up the genome: the next start up is the next window's
    for w_start, w_end in spans:
        if last is not None:
            yield _row(ordinal, region, *last, w_start)
        last = (w_start, w_end)
    assert last is not None
    yield _row(ordinal, region, *last, end)


def _row(ordinal: int, region: BedRegion, start: int, end: int, check_end: int) -> dict[str, Any]:
    """A record's fields (id, chrom, start, end, strand, labels, where), and its region's:
    its order in the input, its span, and the end of the part of it this row checks."""
    return {"id": make_id(region.chrom, start, end, region.strand), "chrom": region.chrom,
            "start": start, "end": end, "strand": region.strand, "labels": list(region.labels),
            "where": region.where, "region": ordinal, "region_start": region.start,
            "region_end": region.end, "check_end": check_end}  # fmt: skip


# reference → the index this process made when it could not see the driver's (a worker
# on another node, the driver's index in a temporary folder): made once per process
_OWN_INDEX: dict[str, str] = {}


def open_reference(reference: str | Path, index: str | Path | None = None) -> pyfaidx.Fasta:
    """The reference as the reader opens it, with the index the driver used when this
    machine sees it; otherwise indexed here, as the reader would, once per process."""
    import pyfaidx

    from hsg.regions.readers import _open_reference

    index = _OWN_INDEX.get(str(reference), index)
    if index is not None and Path(index).is_file():
        return pyfaidx.Fasta(
            str(reference), indexname=str(index), as_raw=True, sequence_always_upper=True
        )
    fasta = _open_reference(Path(reference), reference)
    _OWN_INDEX[str(reference)] = fasta.faidx.indexname
    return fasta


def lookup_record(row: dict[str, Any], fasta: pyfaidx.Fasta) -> SequenceRecord:
    """The record of a `lookup_rows` row, its bases from `fasta`, and the checks of its part.

    Raises `InvalidBases` for an invalid base in the part, `InputError` for the region's
    other problems (keys), each with the message the sequential reader gives."""
    chrom, start, end, strand = row["chrom"], row["start"], row["end"], row["strand"]
    region_start, region_end, check_end = row["region_start"], row["region_end"], row["check_end"]
    bases = fasta[chrom][start : max(end, check_end)].upper()
    part = bases[: check_end - start]
    # the part, and the rest of the window when windows overlap (that rest is the next
    # part's too, which reports the same base): every base fetched is checked
    try:
        check_bases(bases, row["where"], start - region_start)
    except InputError as exc:
        bad = _INVALID_BASE.search(bases)
        raise InvalidBases(str(exc), start + (bad.start() if bad else 0)) from None
    labels = tuple(row["labels"])
    # the region's record, minus the bases of its other parts: the reader's key checks
    region = build_record(
        where=row["where"], sequence=part, chrom=chrom, start=region_start, end=region_end,
        strand=strand, labels=labels, reverse_complement_minus=True,
    )  # fmt: skip
    if (start, end, check_end) == (region_start, region_end, region_end):
        return region  # not a window: the part is the whole region
    sequence = bases[: end - start]
    return SequenceRecord(
        id=row["id"], chrom=chrom, start=start, end=end, strand=strand,
        sequence=reverse_complement(sequence) if strand == "-" else sequence,
        labels=labels, where=row["where"],
    )  # fmt: skip


def problem_key(row: dict[str, Any], exc: InputError) -> tuple[int, int, int]:
    """Where a row's problem comes in the reader's order: its region, bases before keys,
    then the invalid base's position (the lowest is the one the reader names: the parts
    cover the region, so some row reports it)."""
    if isinstance(exc, InvalidBases):
        return (row["region"], 0, exc.at)
    return (row["region"], 1, 0)
