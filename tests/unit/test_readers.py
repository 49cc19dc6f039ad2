"""Readers: every input path, every kind of bad input, and streaming."""

from __future__ import annotations

import gzip
import os
import shutil
import tracemalloc
from pathlib import Path

import pytest

from hsg.regions.readers import count_records, detect_format, read_records
from hsg.regions.records import InputError, SequenceRecord, reverse_complement

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"
# ../shared/data beside the clone (as in CI), or wherever HSG_SHARED_DATA points.
SHARED_DATA = Path(
    os.environ.get("HSG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
SHARED_LOCI = SHARED_DATA / "cisplatin" / "loci.tsv"

CHR1 = "ACGTTGCAAACCCGGGTTTAGGGATTTCCCATATGCGCAT"  # ref.fa chr1, upper-cased


@pytest.fixture
def ref(tmp_path: Path) -> Path:
    """The reference copied to tmp so pyfaidx's .fai never lands in the source tree."""
    return Path(shutil.copy(FIXTURES / "ref.fa", tmp_path / "ref.fa"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- records


def test_record_properties() -> None:
    r = SequenceRecord("chr1:0-8(+)", "chr1", 0, 8, "+", "GGCCATNN")
    assert r.length == 8
    assert r.gc == pytest.approx(4 / 6)  # N is not called
    assert r.labels == ()
    with pytest.raises(AttributeError):
        r.id = "x"  # type: ignore[misc]


def test_reverse_complement() -> None:
    assert reverse_complement("AACGTN") == "NACGTT"


# --------------------------------------------------------------------------- BED


def test_bed_reads_normalises_and_labels(ref: Path) -> None:
    records = list(read_records(FIXTURES / "regions.bed", reference=ref, label_column=6))
    assert [r.id for r in records] == ["chr1:0-10(+)", "chr1:10-20(-)", "chr1:30-40(+)"]
    assert records[0].sequence == CHR1[0:10]
    assert records[2].sequence == CHR1[30:40]  # strand "." read as +
    assert [r.labels for r in records] == [("binding",), ("non_binding",), ("binding",)]
    assert (records[1].chrom, records[1].start, records[1].end) == ("chr1", 10, 20)


def test_bed_minus_strand_is_reverse_complemented(ref: Path) -> None:
    minus = list(read_records(FIXTURES / "regions.bed", reference=ref))[1]
    # Soft-masked (lower-case) reference bases are upper-cased before complementing.
    assert CHR1[10:20] == "CCCGGGTTTA"
    assert minus.strand == "-"
    assert minus.sequence == "TAAACCCGGG"


def test_bed_label_by_name_and_file_label(ref: Path) -> None:
    records = list(
        read_records(FIXTURES / "regions.bed", reference=ref, label="cell_a", label_column="name")
    )
    assert records[0].labels == ("r1", "cell_a")


def test_bed3_defaults_to_plus(ref: Path, tmp_path: Path) -> None:
    bed = write(tmp_path / "three.bed", "chr1\t2\t6\n")
    (record,) = read_records(bed, reference=ref)
    assert (record.id, record.strand, record.sequence) == ("chr1:2-6(+)", "+", CHR1[2:6])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("chr1\t5", "at least 3 columns"),
        ("chr1\tfive\t10", "start must be an integer"),
        ("chr1\t5\t1e3", "end must be an integer"),
        ("chr1\t10\t10", "start 10 must be less than end 10"),
        ("chr1\t12\t10", "must be less than end"),
        ("chr1\t-1\t10", "negative start"),
        ("chrUn\t0\t10", "unknown chromosome 'chrUn'"),
        ("chr1\t30\t41", "beyond the end of chr1 (length 40)"),
        ("chr2\t4\t12", "invalid base 'R' at position 5"),
        ("chr1\t0\t10\tx\t0\t*", "strand must be '+' or '-'"),
    ],
)
def test_bed_errors_name_file_and_line(ref: Path, tmp_path: Path, line: str, message: str) -> None:
    bed = write(tmp_path / "bad.bed", "track name=x\nchr1\t0\t4\n" + line + "\n")
    records = read_records(bed, reference=ref)
    assert next(records).id == "chr1:0-4(+)"  # lines before the bad one are fine
    with pytest.raises(InputError) as err:
        next(records)
    assert str(bed) in str(err.value)
    assert "line 3" in str(err.value)
    assert message in str(err.value)


def test_bed_without_reference(tmp_path: Path) -> None:
    bed = write(tmp_path / "r.bed", "chr1\t0\t4\n")
    with pytest.raises(InputError, match="needs a reference FASTA"):
        read_records(bed)
    with pytest.raises(InputError, match="not found"):
        read_records(bed, reference=tmp_path / "missing.fa")


def test_bed_unknown_label_column_name(ref: Path) -> None:
    with pytest.raises(InputError, match="not a column name"):
        read_records(FIXTURES / "regions.bed", reference=ref, label_column="phenotype")


# --------------------------------------------------------------------------- FASTA


def test_fasta_multi_record() -> None:
    records = list(read_records(FIXTURES / "seqs.fa", label="demo"))
    assert [r.id for r in records] == ["seqA", "seqB", "chr3:100-106(-)"]
    a, b, c = records
    assert a.sequence == "ACGTNNACGTACGT"  # multi-line, upper-cased, blank line skipped
    assert (a.chrom, a.start, a.end, a.strand) == (None, None, None, "+")
    assert b.labels == ("demo",)
    # Our own id form keeps its coordinates; the sequence is taken as already on its strand.
    assert (c.chrom, c.start, c.end, c.strand, c.sequence) == ("chr3", 100, 106, "-", "AACCGG")


def test_fasta_gzipped(tmp_path: Path) -> None:
    gz = tmp_path / "seqs.fa.gz"
    gz.write_bytes(gzip.compress((FIXTURES / "seqs.fa").read_bytes()))
    assert detect_format(gz) == "fasta"
    assert [r.sequence for r in read_records(gz)] == [
        r.sequence for r in read_records(FIXTURES / "seqs.fa")
    ]


def test_fasta_invalid_base_names_line_record_position(tmp_path: Path) -> None:
    fa = write(tmp_path / "bad.fa", ">ok\nACGT\n>broken\nACGTACGT\nACXT\n")
    with pytest.raises(InputError) as err:
        list(read_records(fa))
    msg = str(err.value)
    assert str(fa) in msg and "line 5" in msg and "'broken'" in msg
    assert "invalid base 'X' at position 11" in msg


def test_undecodable_bytes_are_an_input_error(tmp_path: Path) -> None:
    fa = tmp_path / "binary.fa"
    fa.write_bytes(b">a\nAC\xffGT\n")
    with pytest.raises(InputError, match=r"line 2 .*invalid base .* at position 3"):
        list(read_records(fa))


@pytest.mark.parametrize(
    ("text", "message"),
    [("ACGT\n>a\nACGT\n", "before the first '>'"), (">a\nACGT\n>\nAC\n", "empty FASTA header"),
     (">a\n>b\nACGT\n", "empty sequence")],
)  # fmt: skip
def test_fasta_structure_errors(tmp_path: Path, text: str, message: str) -> None:
    fa = write(tmp_path / "bad.fasta", text)
    with pytest.raises(InputError, match=message) as err:
        list(read_records(fa))
    assert "line" in str(err.value) and str(fa) in str(err.value)


# --------------------------------------------------------------------------- TSV


def test_tsv_loci_format() -> None:
    records = list(read_records(FIXTURES / "loci_small.tsv"))
    assert [r.labels for r in records] == [
        ("cisplatin_binding",),
        ("non_binding",),
        ("enhancer_like",),  # non-numeric labels are kept as they are
    ]
    # TSV sequences are already on their strand: no second reverse complement.
    assert records[1].sequence == "TAAACCCGGG"
    assert records[2].sequence == "ACGT"
    assert (records[0].chrom, records[0].start, records[0].end) == ("chr1", 0, 10)


def test_tsv_label_names_and_extra_label() -> None:
    records = list(
        read_records(
            FIXTURES / "loci_small.tsv", label_names={"1": "bound", "0": "unbound"}, label="run1"
        )
    )
    assert records[0].labels == ("bound", "run1")
    assert records[1].labels == ("unbound", "run1")


def test_tsv_minimal_columns(tmp_path: Path) -> None:
    tsv = write(tmp_path / "min.tsv", "id\tsequence\ns1\tACGT\ns2\tGG\n")
    records = list(read_records(tsv))
    assert [(r.id, r.chrom, r.labels) for r in records] == [("s1", None, ()), ("s2", None, ())]


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        ("id\tchrom\tstart\tend\tstrand\tlabel", "sequence"),
        ("chrom\tstart\tsequence", "end"),
        ("strand\tsequence\tlabel", "id (or chrom, start, end)"),
    ],
)
def test_tsv_missing_columns(tmp_path: Path, header: str, missing: str) -> None:
    tsv = write(tmp_path / "cols.tsv", header + "\n")
    with pytest.raises(InputError, match="missing TSV column") as err:
        read_records(tsv)
    assert missing in str(err.value) and str(tsv) in str(err.value)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("chr1:0-4(+)\tchr1\t0\t4\t+\tACGT", "expected 7 tab-separated fields"),
        ("chr1:0-4(+)\tchr1\t0\t4\t+\tACG\t1", "sequence length 3 does not match"),
        ("chr1:0-4(+)\tchr1\t0\t4\t+\tACGU\t1", "invalid base 'U' at position 4"),
        ("chr1:4-4(+)\tchr1\t4\t4\t+\tACGT\t1", "start 4 must be less than end 4"),
        ("chr1:0-4(+)\tchr1\tzero\t4\t+\tACGT\t1", "start must be an integer"),
        ("chr1:0-4(?)\tchr1\t0\t4\t?\tACGT\t1", "strand must be"),
    ],
)
def test_tsv_row_errors(tmp_path: Path, row: str, message: str) -> None:
    header = "id\tchrom\tstart\tend\tstrand\tsequence\tlabel\n"
    tsv = write(tmp_path / "rows.tsv", header + "chr1:0-2(+)\tchr1\t0\t2\t+\tAC\t1\n" + row + "\n")
    with pytest.raises(InputError, match="line 3") as err:
        list(read_records(tsv))
    assert message in str(err.value) and str(tsv) in str(err.value)


# --------------------------------------------------------------------------- empty, formats


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("empty.bed", "track name=x\n# nothing\n\n"),
        ("empty.fa", ""),
        ("header_only.tsv", "id\tchrom\tstart\tend\tstrand\tsequence\tlabel\n"),
        ("empty.tsv", ""),
    ],
)
def test_empty_input(ref: Path, tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(InputError, match="contains no sequences") as err:
        list(read_records(path, reference=ref))
    assert str(path) in str(err.value)


def test_format_detection(tmp_path: Path) -> None:
    assert detect_format("x.BED") == "bed"
    assert detect_format("x.fna.gz") == "fasta"
    assert detect_format("x.txt", fmt="tsv") == "tsv"
    with pytest.raises(InputError, match="cannot tell the format"):
        detect_format("x.txt")
    with pytest.raises(InputError, match="unknown format"):
        detect_format("x.bed", fmt="vcf")
    with pytest.raises(InputError, match="no such file"):
        read_records(tmp_path / "absent.tsv")
    txt = write(tmp_path / "seqs.txt", ">a\nAC\n")
    assert [r.id for r in read_records(txt, fmt="fasta")] == ["a"]


def test_count_records(ref: Path) -> None:
    assert count_records(FIXTURES / "regions.bed") == 3
    assert count_records(FIXTURES / "seqs.fa") == 3
    assert count_records(FIXTURES / "loci_small.tsv") == 3


# --------------------------------------------------------------------------- streaming


def test_first_record_does_not_read_the_rest(tmp_path: Path) -> None:
    tsv = tmp_path / "big.tsv"
    with open(tsv, "w") as fh:
        fh.write("id\tsequence\nfirst\tACGT\n")
        fh.writelines(f"bad{i}\tNOT A SEQUENCE\n" for i in range(50_000))
    first = next(read_records(tsv))
    assert first.id == "first"  # the invalid lines after it were never parsed


def test_memory_is_flat_in_the_number_of_records(tmp_path: Path) -> None:
    tsv = tmp_path / "many.tsv"
    with open(tsv, "w") as fh:
        fh.write("id\tsequence\tlabel\n")
        fh.writelines(f"s{i}\t{'ACGT' * 25}\t{i % 2}\n" for i in range(20_000))
    tracemalloc.start()
    try:
        n = sum(1 for _ in read_records(tsv))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 20_000
    assert peak < 512 * 1024, f"peak {peak} bytes for a {tsv.stat().st_size} byte file"


# --------------------------------------------------------------------------- shared data


@pytest.mark.skipif(not SHARED_LOCI.is_file(), reason=f"shared data absent: {SHARED_LOCI}")
def test_shared_cisplatin_loci() -> None:
    counts: dict[tuple[str, ...], int] = {}
    for record in read_records(SHARED_LOCI):
        counts[record.labels] = counts.get(record.labels, 0) + 1
    assert sum(counts.values()) == 23_048
    assert counts == {("cisplatin_binding",): 10_571, ("non_binding",): 12_477}
