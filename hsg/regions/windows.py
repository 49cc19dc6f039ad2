"""Tiling long records into windows that fit a model.

A record longer than the model's context is split into windows of ``size`` bases, one every
``stride`` bases from the record's start. The last window is aligned to the record's end, so
every window is exactly ``size`` bases long and the end of the record is always covered (it
overlaps its predecessor by more than usual when the length is not a multiple of the
stride). Records of at most ``size`` bases are passed through unchanged, so they are the only
records shorter than ``size``.

Each window is a record of its own: with coordinates it gets the canonical id of its genomic
span (``chr1:100-200(+)``, `make_id`), without them ``<id>:w<start>-<end>`` on sequence
offsets (0-based half-open). Labels are copied from the record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from hsg.regions.records import InputError, SequenceRecord, check_key, make_id, shorten


def window_offsets(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Sequence offsets ``(start, end)`` of the windows tiling ``length`` bases.

    ``[(0, length)]`` when ``length <= size``; otherwise windows at 0, stride, 2*stride, …
    while they fit, plus one ending at ``length`` if the last of those stops short of it.
    """
    return list(iter_window_offsets(length, size, stride))


def iter_window_offsets(length: int, size: int, stride: int) -> Iterator[tuple[int, int]]:
    """`window_offsets` one at a time: a chromosome-long region tiles in flat memory."""
    if length <= size:
        yield (0, length)
        return
    end = 0
    for a in range(0, length - size + 1, stride):
        end = a + size
        yield (a, end)
    if end < length:
        yield (length - size, length)


def window_span(start: int, end: int, strand: str, a: int, b: int) -> tuple[int, int]:
    """Genomic ``(start, end)`` of the window at sequence offsets ``[a, b)`` of a region.

    A ``-`` region's sequence is reverse-complemented, so its offset 0 is genomic ``end - 1``.
    """
    if strand == "-":
        return end - b, end - a
    return start + a, start + b


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"window {name} must be an integer >= 1, got {value!r}")
    return value


def tile_records(
    records: Iterable[SequenceRecord], size: int, stride: int | None = None
) -> Iterator[SequenceRecord]:
    """Split every record longer than ``size`` bases into windows (see the module notes).

    ``stride`` (default ``size``: adjacent windows, no overlap) is the step between window
    starts; below ``size`` windows overlap, above it the bases between windows are skipped
    (except that the last window still ends at the record's end). Streams: one record is
    held at a time. ``size`` and ``stride`` are checked at the call, before any record is
    read; a bad one raises `InputError`.

    Coordinates follow the strand: a ``-`` record's sequence is already reverse-complemented,
    so its window at sequence offsets ``[a, b)`` covers genomic ``[end - b, end - a)``, and
    that window's sequence is the reverse complement of the reference there.
    """
    size, stride = check_window(size, stride)
    return _tiles(records, size, stride)


def check_window(size: object, stride: object = None) -> tuple[int, int]:
    """``(size, stride)`` checked (`InputError` unless integers >= 1); stride defaults to size."""
    size = _positive("size", size)
    return size, size if stride is None else _positive("stride", stride)


def _tiles(records: Iterable[SequenceRecord], size: int, stride: int) -> Iterator[SequenceRecord]:
    for record in records:
        if record.length <= size:
            yield record
            continue
        for a, b in window_offsets(record.length, size, stride):
            yield _window(record, a, b)


def _window(record: SequenceRecord, a: int, b: int) -> SequenceRecord:
    """The window at sequence offsets ``[a, b)`` of ``record``."""
    where = f"record {shorten(record.id)!r}"
    chrom, start, end = record.chrom, record.start, record.end
    if chrom is None or start is None or end is None:
        window_id = f"{record.id}:w{a}-{b}"
        check_key(window_id, "window id", where)
        return SequenceRecord(
            id=window_id,
            chrom=None,
            start=None,
            end=None,
            strand=record.strand,
            sequence=record.sequence[a:b],
            labels=record.labels,
            where=record.where,
        )
    if end - start != record.length:
        raise InputError(
            f"{where}: coordinates {chrom}:{start}-{end} span {end - start} bases but the "
            f"sequence has {record.length}; cannot place its windows"
        )
    w_start, w_end = window_span(start, end, record.strand, a, b)
    return SequenceRecord(
        id=make_id(chrom, w_start, w_end, record.strand),
        chrom=chrom,
        start=w_start,
        end=w_end,
        strand=record.strand,
        sequence=record.sequence[a:b],
        labels=record.labels,
        where=record.where,
    )
