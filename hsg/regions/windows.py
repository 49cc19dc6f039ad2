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
    if length <= size:
        return [(0, length)]
    offsets = [(a, a + size) for a in range(0, length - size + 1, stride)]
    if offsets[-1][1] < length:
        offsets.append((length - size, length))
    return offsets


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
    size = _positive("size", size)
    stride = size if stride is None else _positive("stride", stride)
    return _tiles(records, size, stride)


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
    if record.strand == "-":
        w_start, w_end = end - b, end - a  # sequence offset 0 is genomic end - 1
    else:
        w_start, w_end = start + a, start + b
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
