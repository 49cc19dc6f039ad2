"""Windows: tiling long records into model-sized pieces, with ids and coordinates that hold."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsg.regions.readers import read_records
from hsg.regions.records import MAX_KEY_BYTES, InputError, SequenceRecord, reverse_complement
from hsg.regions.windows import tile_records, window_offsets

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"
CHR1 = "ACGTTGCAAACCCGGGTTTAGGGATTTCCCATATGCGCAT"  # ref.fa chr1, upper-cased


@pytest.fixture
def ref(tmp_path: Path) -> Path:
    """The reference copied to tmp so pyfaidx's .fai never lands in the source tree."""
    return Path(shutil.copy(FIXTURES / "ref.fa", tmp_path / "ref.fa"))


def bed_record(ref: Path, tmp_path: Path, line: str) -> SequenceRecord:
    bed = tmp_path / "one.bed"
    bed.write_text(line + "\n")
    (record,) = read_records(bed, reference=ref)
    return record


def plain(id_: str, sequence: str, labels: tuple[str, ...] = ()) -> SequenceRecord:
    return SequenceRecord(id_, None, None, None, "+", sequence, labels)


# --------------------------------------------------------------------------- offsets


@pytest.mark.parametrize(
    ("length", "size", "stride", "expected"),
    [
        (4, 4, 4, [(0, 4)]),
        (3, 4, 2, [(0, 3)]),
        (8, 4, 4, [(0, 4), (4, 8)]),
        (10, 4, 4, [(0, 4), (4, 8), (6, 10)]),  # last one aligned to the end
        (10, 4, 3, [(0, 4), (3, 7), (6, 10)]),  # already ends at the end: nothing added
        (10, 4, 2, [(0, 4), (2, 6), (4, 8), (6, 10)]),
        (12, 4, 5, [(0, 4), (5, 9), (8, 12)]),  # stride > size skips bases, not the end
        (5, 1, 1, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]),
    ],
)
def test_window_offsets(length: int, size: int, stride: int, expected: list) -> None:
    assert window_offsets(length, size, stride) == expected


@pytest.mark.parametrize("size", [1, 3, 6, 7])
@pytest.mark.parametrize("stride", [1, 2, 6, 9])
def test_every_window_is_full_length_and_the_ends_are_covered(size: int, stride: int) -> None:
    for length in range(size + 1, size + 20):
        offsets = window_offsets(length, size, stride)
        assert all(b - a == size for a, b in offsets)
        assert offsets[0][0] == 0 and offsets[-1][1] == length
        assert len(set(offsets)) == len(offsets)
        assert [a for a, _ in offsets] == sorted(a for a, _ in offsets)
        if stride <= size:  # no gaps
            covered = set().union(*(range(a, b) for a, b in offsets))
            assert covered == set(range(length))


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("size", "stride", "message"),
    [
        (0, None, "size must be an integer >= 1, got 0"),
        (-5, None, "size must be an integer >= 1, got -5"),
        (4, 0, "stride must be an integer >= 1, got 0"),
        (4, -1, "stride must be an integer >= 1, got -1"),
        (2.5, None, "size must be an integer >= 1, got 2.5"),
        ("4", None, "size must be an integer >= 1, got '4'"),
        (True, None, "size must be an integer >= 1, got True"),
    ],
)
def test_bad_size_or_stride_fails_at_the_call(size: object, stride: object, message: str) -> None:
    def untouched() -> Iterator[SequenceRecord]:
        raise AssertionError("records were read before the arguments were checked")
        yield  # pragma: no cover

    with pytest.raises(InputError, match=message):
        tile_records(untouched(), size, stride)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- records


def test_short_records_pass_through_unchanged() -> None:
    short, exact = plain("a", "ACG", ("x",)), plain("b", "ACGT")
    assert list(tile_records([short, exact], 4)) == [short, exact]
    out = list(tile_records([exact], 4, 1))
    assert out[0] is exact


def test_plus_strand_windows_get_coordinates_and_canonical_ids(ref: Path) -> None:
    records = list(read_records(FIXTURES / "regions.bed", reference=ref, label_column=6))
    first = records[0]  # chr1:0-10(+), label binding
    windows = list(tile_records([first], 4))
    assert [w.id for w in windows] == ["chr1:0-4(+)", "chr1:4-8(+)", "chr1:6-10(+)"]
    for w in windows:
        assert (w.chrom, w.strand, w.labels) == ("chr1", "+", ("binding",))
        assert w.sequence == CHR1[w.start : w.end]
        assert w.length == 4


def test_minus_strand_windows_are_counted_from_the_end(ref: Path, tmp_path: Path) -> None:
    record = bed_record(ref, tmp_path, "chr1\t3\t40\tr\t0\t-\tphenotype")
    assert record.sequence == reverse_complement(CHR1[3:40])
    windows = list(tile_records([record], 10, 7))
    # Sequence offsets [0,10), [7,17), [14,24), [21,31), [27,37) of a 37-base record on -.
    assert [(w.start, w.end) for w in windows] == [(30, 40), (23, 33), (16, 26), (9, 19), (3, 13)]
    assert windows[0].id == "chr1:30-40(-)"
    for w in windows:
        assert w.strand == "-" and w.chrom == "chr1" and w.length == 10
        assert w.sequence == reverse_complement(CHR1[w.start : w.end])


def test_windows_equal_records_read_at_their_coordinates(ref: Path, tmp_path: Path) -> None:
    for strand in "+-":
        record = bed_record(ref, tmp_path, f"chr1\t1\t39\tr\t0\t{strand}")
        windows = list(tile_records([record], 9, 4))
        bed = tmp_path / "windows.bed"
        bed.write_text("".join(f"chr1\t{w.start}\t{w.end}\tw\t0\t{strand}\n" for w in windows))
        assert list(read_records(bed, reference=ref)) == windows


def test_windows_without_coordinates_use_sequence_offsets() -> None:
    record = plain("seqA", "ACGTNNACGTACGT", ("demo",))
    windows = list(tile_records([record], 6, 4))
    assert [w.id for w in windows] == ["seqA:w0-6", "seqA:w4-10", "seqA:w8-14"]
    assert [w.sequence for w in windows] == ["ACGTNN", "NNACGT", "GTACGT"]
    assert all(
        (w.chrom, w.start, w.end, w.labels) == (None, None, None, ("demo",)) for w in windows
    )


def test_fasta_records_with_and_without_coordinates() -> None:
    records = list(read_records(FIXTURES / "seqs.fa"))
    windows = list(tile_records(records, 5, 5))
    assert [w.id for w in windows] == [
        "seqA:w0-5", "seqA:w5-10", "seqA:w9-14",
        "seqB",  # 4 bases: unchanged
        "chr3:101-106(-)", "chr3:100-105(-)",  # 6 bases on -, windows from the end
    ]  # fmt: skip
    assert [w.sequence for w in windows[-2:]] == ["AACCG", "ACCGG"]


def test_ids_are_unique_within_a_record() -> None:
    record = plain("s", "ACGT" * 25)
    for size, stride in [(7, 3), (10, 10), (33, 1), (99, 50)]:
        ids = [w.id for w in tile_records([record], size, stride)]
        assert len(ids) == len(set(ids))


def test_inconsistent_coordinates_are_an_input_error() -> None:
    record = SequenceRecord("odd", "chr1", 0, 50, "+", "ACGT" * 5)
    with pytest.raises(InputError, match=r"record 'odd': coordinates chr1:0-50 span 50 bases"):
        list(tile_records([record], 4))


def test_window_id_over_the_key_limit_is_an_input_error() -> None:
    record = plain("x" * (MAX_KEY_BYTES - 3), "ACGTACGT")
    with pytest.raises(InputError, match=f"window id .* the limit is {MAX_KEY_BYTES} bytes"):
        list(tile_records([record], 4))


def test_tiling_streams() -> None:
    def endless() -> Iterator[SequenceRecord]:
        for i in itertools.count():
            yield plain(f"s{i}", "ACGT" * 3)

    first = list(itertools.islice(tile_records(endless(), 8), 4))
    assert [w.id for w in first] == ["s0:w0-8", "s0:w4-12", "s1:w0-8", "s1:w4-12"]
