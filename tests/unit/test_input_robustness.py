"""Bad input is caught clearly, before anything is written (issue #12).

Byte-order marks are read through, damaged gzip files and over-long keys are `InputError`s
that name the file and the line, whatever the reader.
"""

from __future__ import annotations

import gzip
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from hsg.regions.intervals import load_bed_intervals, read_bed_intervals
from hsg.regions.readers import count_records, read_records
from hsg.regions.records import MAX_KEY_BYTES, InputError, build_record

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"
BOM = b"\xef\xbb\xbf"


@pytest.fixture
def ref(tmp_path: Path) -> Path:
    """The reference copied to tmp so pyfaidx's .fai never lands in the source tree."""
    return Path(shutil.copy(FIXTURES / "ref.fa", tmp_path / "ref.fa"))


def with_bom(src: Path | bytes, dst: Path) -> Path:
    data = src if isinstance(src, bytes) else src.read_bytes()
    dst.write_bytes(BOM + data)
    return dst


# --------------------------------------------------------------------------- byte-order mark


def test_tsv_with_bom_keeps_its_ids(tmp_path: Path) -> None:
    src = FIXTURES / "loci_small.tsv"
    bom = with_bom(src, tmp_path / "loci.tsv")
    expected = list(read_records(src))
    assert list(read_records(bom)) == expected
    # Ids from the id column, not generated: the file's own ids are kept verbatim.
    assert [r.id for r in expected][:2] == ["chr1:0-10(+)", "chr1:10-20(-)"]
    assert count_records(bom) == count_records(src)


def test_tsv_with_bom_and_own_ids(tmp_path: Path) -> None:
    text = b"id\tchrom\tstart\tend\tsequence\nlocus_1\tchr1\t0\t4\tACGT\n"
    plain = tmp_path / "plain.tsv"
    plain.write_bytes(text)
    bom = with_bom(text, tmp_path / "bom.tsv")
    assert [r.id for r in read_records(bom)] == ["locus_1"]
    assert list(read_records(bom)) == list(read_records(plain))


def test_gzipped_tsv_with_bom(tmp_path: Path) -> None:
    text = b"id\tsequence\ns1\tACGT\n"
    gz = tmp_path / "bom.tsv.gz"
    gz.write_bytes(gzip.compress(BOM + text))
    assert [r.id for r in read_records(gz)] == ["s1"]


@pytest.mark.parametrize(
    "header",
    [
        "ID\tchrom\tstart\tend\tsequence",
        " id \tchrom\tstart\tend\tsequence",
        "\ufeffid\tchrom\tstart\tend\tsequence",  # a second mark, after the one utf-8-sig drops
        "Id\tChrom\tStart\tEnd\tSequence",
    ],
)
def test_tsv_id_column_is_found_whatever_its_spelling(tmp_path: Path, header: str) -> None:
    tsv = tmp_path / "ids.tsv"
    tsv.write_bytes(BOM + (header + "\nlocus_1\tchr1\t0\t4\tACGT\n").encode())
    (record,) = read_records(tsv)
    assert record.id == "locus_1"
    assert (record.chrom, record.start, record.end) == ("chr1", 0, 4)


def test_tsv_without_id_column_still_generates_ids(tmp_path: Path) -> None:
    tsv = with_bom(b"chrom\tstart\tend\tsequence\nchr1\t0\t4\tACGT\n", tmp_path / "noid.tsv")
    assert [r.id for r in read_records(tsv)] == ["chr1:0-4(+)"]


def test_tsv_empty_id_is_not_replaced_by_a_generated_one(tmp_path: Path) -> None:
    tsv = tmp_path / "blank.tsv"
    tsv.write_text(
        "id\tchrom\tstart\tend\tsequence\nlocus_1\tchr1\t0\t4\tACGT\n \tchr1\t4\t8\tACGT\n"
    )
    with pytest.raises(InputError) as err:
        list(read_records(tsv))
    assert str(err.value) == f"{tsv}, line 3: empty id (the header has an id column)"


def test_tsv_column_named_twice(tmp_path: Path) -> None:
    tsv = tmp_path / "twice.tsv"
    tsv.write_text("id\tsequence\tID\ns1\tACGT\ts2\n")
    with pytest.raises(InputError) as err:
        read_records(tsv)
    assert str(err.value) == f"{tsv}, line 1: column 'id' appears twice (columns 1 and 3)"


def test_fasta_with_bom(tmp_path: Path) -> None:
    src = FIXTURES / "seqs.fa"
    bom = with_bom(src, tmp_path / "seqs.fa")
    assert list(read_records(bom, label="x")) == list(read_records(src, label="x"))
    assert count_records(bom) == count_records(src)


@pytest.mark.parametrize(
    "text",
    [
        (FIXTURES / "regions.bed").read_bytes(),  # starts with a browser line
        b"chr1\t0\t10\tr1\t0\t+\nchr1\t10\t20\tr2\t0\t-\n",  # starts with a data line
        b"track name=x\nchr1\t0\t10\tr1\n",
    ],
    ids=["browser_first", "data_first", "track_first"],
)
def test_bed_with_bom(ref: Path, tmp_path: Path, text: bytes) -> None:
    plain = tmp_path / "plain.bed"
    plain.write_bytes(text)
    bom = with_bom(text, tmp_path / "bom.bed")
    expected = list(read_records(plain, reference=ref, label_column=3))
    assert list(read_records(bom, reference=ref, label_column=3)) == expected
    assert count_records(bom) == count_records(plain)


def test_bed_annotation_track_with_bom(tmp_path: Path) -> None:
    src = FIXTURES / "elements.bed"
    bom = with_bom(src, tmp_path / "elements.bed")
    assert list(read_bed_intervals(bom)) == list(read_bed_intervals(src))
    data = with_bom(b"chr1\t100\t200\tenhancer\n", tmp_path / "data_first.bed")
    (interval,) = read_bed_intervals(data)
    assert (interval.chrom, interval.start, interval.end) == ("chr1", 100, 200)
    assert len(load_bed_intervals(data)) == 1


def test_reference_with_bom_is_named(tmp_path: Path) -> None:
    ref = with_bom(FIXTURES / "ref.fa", tmp_path / "ref.fa")
    with pytest.raises(InputError) as err:
        read_records(FIXTURES / "regions.bed", reference=ref)
    assert str(err.value) == (
        f"{FIXTURES / 'regions.bed'}: reference FASTA {ref} starts with a UTF-8 byte-order "
        "mark, which a FASTA index cannot skip; remove its first 3 bytes"
    )


@pytest.mark.parametrize("name", ["u16.tsv", "u16.fa", "u16.bed", "u16.tsv.gz"])
def test_utf16_input_is_refused(ref: Path, tmp_path: Path, name: str) -> None:
    data = "id\tsequence\ns1\tACGT\n".encode("utf-16")
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(InputError) as err:
        list(read_records(path, reference=ref))
    assert str(err.value) == (
        f"{path}: the file is UTF-16 encoded (it starts with a UTF-16 byte-order mark); "
        "save it as UTF-8"
    )


# --------------------------------------------------------------------------- damaged gzip


def _bases(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("ACGT") for _ in range(n))


def big_text(fmt: str, n: int = 4000) -> bytes:
    """Random (poorly compressible) content, so a cut lands well inside the data."""
    rng = random.Random(0)
    if fmt == "tsv":
        rows = [f"s{i}\t{_bases(rng, 30)}\n" for i in range(n)]
        return ("id\tsequence\n" + "".join(rows)).encode()
    if fmt == "fasta":
        return "".join(f">s{i}\n{_bases(rng, 30)}\n{_bases(rng, 12)}\n" for i in range(n)).encode()
    rows = []
    for i in range(n):
        start = rng.randrange(0, 30)
        rows.append(f"chr1\t{start}\t{start + rng.randrange(1, 10)}\tr{i}\t0\t{rng.choice('+-')}\n")
    return "".join(rows).encode()


Reader = Callable[[Path, Path], object]

READERS: dict[str, tuple[str, str, Reader]] = {
    "tsv": ("tsv", "x.tsv.gz", lambda p, ref: list(read_records(p))),
    "fasta": ("fasta", "x.fa.gz", lambda p, ref: list(read_records(p))),
    "bed": ("bed", "x.bed.gz", lambda p, ref: list(read_records(p, reference=ref))),
    "bed track": ("bed", "track.bed.gz", lambda p, ref: load_bed_intervals(p)),
    "count": ("tsv", "n.tsv.gz", lambda p, ref: count_records(p)),
}


@pytest.mark.parametrize("reader", READERS)
def test_intact_gzip_reads(ref: Path, tmp_path: Path, reader: str) -> None:
    fmt, name, read = READERS[reader]
    path = tmp_path / name
    path.write_bytes(gzip.compress(big_text(fmt)))
    read(path, ref)  # no error: the damage tests below test damage, not the content


@pytest.mark.parametrize("reader", READERS)
def test_truncated_gzip_names_file_and_line(ref: Path, tmp_path: Path, reader: str) -> None:
    fmt, name, read = READERS[reader]
    packed = gzip.compress(big_text(fmt))
    path = tmp_path / name
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(InputError) as err:
        read(path, ref)
    message = str(err.value)
    assert message.startswith(f"{path}: corrupt or truncated gzip file, unreadable after line ")
    assert message.endswith("(Compressed file ended before the end-of-stream marker was reached)")
    line = int(message.split("unreadable after line ")[1].split()[0])
    assert 100 < line < big_text(fmt).count(b"\n")


@pytest.mark.parametrize("reader", READERS)
def test_gzip_cut_inside_the_header(ref: Path, tmp_path: Path, reader: str) -> None:
    fmt, name, read = READERS[reader]
    path = tmp_path / name
    path.write_bytes(gzip.compress(big_text(fmt))[:6])
    with pytest.raises(
        InputError, match="corrupt or truncated gzip file, unreadable from the start"
    ):
        read(path, ref)


@pytest.mark.parametrize("reader", READERS)
def test_gzip_with_garbage_at_the_start(ref: Path, tmp_path: Path, reader: str) -> None:
    fmt, name, read = READERS[reader]
    packed = gzip.compress(big_text(fmt))
    path = tmp_path / name
    path.write_bytes(packed[:10] + b"this is not deflate data" * 20)
    with pytest.raises(InputError) as err:
        read(path, ref)
    assert str(err.value).startswith(
        f"{path}: corrupt or truncated gzip file, unreadable from the start (Error -3 "
    )


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("where", [0.2, 0.5, 0.8])
def test_gzip_with_garbage_inside(ref: Path, tmp_path: Path, reader: str, where: float) -> None:
    """Garbage may decompress into plausible lines; the damage is still what gets reported."""
    fmt, name, read = READERS[reader]
    packed = bytearray(gzip.compress(big_text(fmt)))
    at = int(len(packed) * where)
    packed[at : at + 64] = b"\x00garbage\xff" * 8
    path = tmp_path / name
    path.write_bytes(bytes(packed))
    with pytest.raises(InputError) as err:
        read(path, ref)
    assert str(err.value).startswith(f"{path}: corrupt or truncated gzip file")


@pytest.mark.parametrize("reader", READERS)
def test_gzip_with_a_bad_checksum(ref: Path, tmp_path: Path, reader: str) -> None:
    fmt, name, read = READERS[reader]
    packed = bytearray(gzip.compress(big_text(fmt)))
    packed[-8] ^= 0xFF  # CRC-32 of the data, checked when the end is reached
    path = tmp_path / name
    path.write_bytes(bytes(packed))
    with pytest.raises(InputError, match=r"unreadable after line \d+ \(CRC check failed"):
        read(path, ref)


def test_a_bad_line_in_an_intact_gzip_is_reported_as_such(tmp_path: Path) -> None:
    text = big_text("tsv").replace(b"s7\t", b"s7\tX", 1)
    path = tmp_path / "typo.tsv.gz"
    path.write_bytes(gzip.compress(text))
    with pytest.raises(InputError) as err:
        list(read_records(path))
    assert str(err.value).startswith(f"{path}, line 9 (record 's7'): invalid base 'X'")


# --------------------------------------------------------------------------- key limits


def test_key_limit_constant() -> None:
    assert MAX_KEY_BYTES == 4000


def test_id_at_the_limit_is_accepted_over_it_refused(tmp_path: Path) -> None:
    ok, long = "x" * MAX_KEY_BYTES, "y" * (MAX_KEY_BYTES + 1)
    tsv = tmp_path / "long.tsv"
    tsv.write_text(f"id\tsequence\n{ok}\tACGT\n{long}\tACGT\n")
    records = read_records(tsv)
    assert next(records).id == ok
    with pytest.raises(InputError) as err:
        next(records)
    shown = "y" * 59 + "…"
    assert str(err.value) == (
        f"{tsv}, line 3 (record {shown!r}): id {shown!r} is {MAX_KEY_BYTES + 1} bytes long "
        f"(UTF-8); the limit is {MAX_KEY_BYTES} bytes (MAX_KEY_BYTES, Neo4j index keys)"
    )


def test_key_limit_counts_utf8_bytes_not_characters(tmp_path: Path) -> None:
    euro = "€" * (MAX_KEY_BYTES // 3 + 1)  # 1334 characters, 4002 bytes
    tsv = tmp_path / "euro.tsv"
    tsv.write_text(f"id\tsequence\n{euro}\tACGT\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"line 2 .* is 4002 bytes long"):
        list(read_records(tsv))


def test_fasta_name_over_the_limit(tmp_path: Path) -> None:
    fa = tmp_path / "long.fa"
    fa.write_text(">ok\nACGT\n>" + "n" * 5000 + " description\nACGT\n")
    with pytest.raises(InputError) as err:
        list(read_records(fa))
    message = str(err.value)
    assert message.startswith(f"{fa}, line 3 (record 'nnn")
    assert "id 'nnn" in message and "is 5000 bytes long" in message
    assert len(message) < 400  # the value is shortened, not printed whole


def test_tsv_label_over_the_limit(tmp_path: Path) -> None:
    tsv = tmp_path / "label.tsv"
    tsv.write_text(f"id\tsequence\tlabel\ns1\tACGT\t1\ns2\tACGT\t{'L' * 4001}\n")
    with pytest.raises(InputError, match=r"line 3 \(record 's2'\): label 'LLL.* is 4001 bytes"):
        list(read_records(tsv))


def test_bed_label_over_the_limit(ref: Path, tmp_path: Path) -> None:
    bed = tmp_path / "label.bed"
    bed.write_text(f"chr1\t0\t10\tr1\t0\t+\t{'L' * 4001}\n")
    with pytest.raises(InputError, match=r"line 1: label 'LLL.* is 4001 bytes"):
        list(read_records(bed, reference=ref, label_column=6))


def test_bed_track_name_over_the_limit(tmp_path: Path) -> None:
    bed = tmp_path / "track.bed"
    bed.write_text(f"chr1\t0\t10\tok\nchr1\t5\t20\t{'N' * 4001}\n")
    with pytest.raises(InputError, match=r"track.bed, line 2: name 'NNN.* is 4001 bytes"):
        load_bed_intervals(bed)


def test_tsv_chrom_over_the_limit(tmp_path: Path) -> None:
    tsv = tmp_path / "chrom.tsv"
    tsv.write_text(f"chrom\tstart\tend\tsequence\n{'c' * 4001}\t0\t4\tACGT\n")
    with pytest.raises(InputError, match=r"line 2: chrom 'ccc.* is 4001 bytes"):
        list(read_records(tsv))


@pytest.mark.parametrize("label", ["", "   ", "L" * 4001])
def test_bad_fixed_label_fails_before_any_record(tmp_path: Path, label: str) -> None:
    fa = tmp_path / "seqs.fa"
    fa.write_text(">a\nACGT\n")
    with pytest.raises(InputError, match=rf"^{fa}: (empty label|label 'LLL.* is 4001 bytes)"):
        read_records(fa, label=label)  # the call raises; nothing is iterated


def test_label_mapped_to_blank_is_refused(tmp_path: Path) -> None:
    tsv = tmp_path / "names.tsv"
    tsv.write_text("id\tsequence\tlabel\ns1\tACGT\t1\n")
    with pytest.raises(InputError) as err:
        list(read_records(tsv, label_names={"1": " "}))
    assert str(err.value) == f"{tsv}, line 2 (record 's1'): empty label"


def test_empty_label_cell_means_no_label(tmp_path: Path) -> None:
    tsv = tmp_path / "unlabelled.tsv"
    tsv.write_text("id\tsequence\tlabel\ns1\tACGT\t\ns2\tACGT\t1\n")
    assert [r.labels for r in read_records(tsv)] == [(), ("cisplatin_binding",)]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": " "}, "here: empty id"),
        ({"id": "s", "labels": ("ok", "")}, "here: empty label"),
        ({"id": "s", "labels": ("é" * 2001,)}, "here: label 'ééé"),
        ({"chrom": "c" * 4001, "start": 0, "end": 4}, "here: chrom 'ccc"),
    ],
)
def test_build_record_checks_keys(fields: dict, message: str) -> None:
    with pytest.raises(InputError) as err:
        build_record(where="here", sequence="ACGT", **fields)
    assert str(err.value).startswith(message)
