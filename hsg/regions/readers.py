"""Streaming readers: BED + reference FASTA, FASTA, and labelled TSV into `SequenceRecord`s.

Readers are generators so that memory stays flat in the number of records: the encoder
consumes batches while the file is still being read, and a genome-scale BED never has to
fit in memory. Argument and file-level problems (missing file, unknown format, missing
reference, missing TSV columns) are raised when `read_records` is called, before the first
record; line-level problems are raised when the iteration reaches the offending line.

Every text input is read the same way (`open_text`): plain or gzipped, with or without a
UTF-8 byte-order mark, and a corrupt or truncated gzip file is an `InputError` like any other
bad input, never a decompression traceback.
"""

from __future__ import annotations

import codecs
import gzip
import io
import re
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from hsg.regions.records import (
    MAX_KEY_BYTES,
    STRANDS,
    InputError,
    SequenceRecord,
    build_record,
    check_bases,
    check_key,
    shorten,
)

if TYPE_CHECKING:
    import pyfaidx

FORMATS = ("bed", "fasta", "tsv")

# Cisplatin loci (the shared data set) encode the phenotype as 1/0.
DEFAULT_LABEL_NAMES: Mapping[str, str] = {"1": "cisplatin_binding", "0": "non_binding"}

BED_COLUMNS = (
    "chrom", "start", "end", "name", "score", "strand",
    "thickStart", "thickEnd", "itemRgb", "blockCount", "blockSizes", "blockStarts",
)  # fmt: skip
TSV_COLUMNS = ("id", "chrom", "start", "end", "strand", "sequence", "label")

_EXTENSIONS = {
    ".bed": "bed",
    ".fa": "fasta",
    ".fasta": "fasta",
    ".fna": "fasta",
    ".fas": "fasta",
    ".tsv": "tsv",
}
_BED_SKIP = ("#", "track", "browser")
# Our own id form; FASTA names in it keep their coordinates (samtools' 1-based
# "chr1:101-200" has no strand suffix and is deliberately not matched).
_CANONICAL_ID = re.compile(r"^(?P<chrom>[^:\s]+):(?P<start>\d+)-(?P<end>\d+)\((?P<strand>[+-])\)$")

LabelColumn = int | str | None

_GZIP_MAGIC = b"\x1f\x8b"
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# What a damaged gzip stream raises: EOFError when truncated, BadGzipFile (an OSError) for a
# bad header or CRC, zlib.error for garbage inside the deflate data.
_GZIP_ERRORS = (EOFError, OSError, zlib.error)
# Garbage inside a gzip file can decompress into plausible text: the reader then reports a
# bad line, and zlib or the CRC notice the damage only further on. On such an error this
# much more of the file is decompressed to tell damage from a genuine bad line (bounded, so
# an ordinary typo in a large file is still reported at once).
_DAMAGE_CHECK_BYTES = 4 << 20


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    """The format named by ``fmt`` or by the extension (``.gz`` ignored)."""
    if fmt is not None:
        fmt = fmt.lower()
        fmt = {"fa": "fasta", "fna": "fasta"}.get(fmt, fmt)
        if fmt not in FORMATS:
            raise InputError(f"{path}: unknown format {fmt!r} (expected one of {FORMATS})")
        return fmt
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]]
    raise InputError(
        f"{path}: cannot tell the format from the extension; use .bed, .fa/.fasta/.fna "
        "or .tsv (optionally .gz), or pass fmt="
    )


class TextInput:
    """Lines of a text input, counting them, with read errors turned into `InputError`.

    Iterate over it (or call `readline`) like a text file. A decompression error names the
    file and the last line that could be read: the lines before it were complete and valid
    gzip data, everything from there on is lost. Used as a context manager, an `InputError`
    raised inside the block for a gzip file is replaced by a corruption error if the data
    just after it turns out to be damaged (see `_DAMAGE_CHECK_BYTES`).
    """

    def __init__(self, path: Path, raw: IO[bytes], compressed: bool) -> None:
        self.path = path
        self.compressed = compressed
        self.lines_read = 0
        self.damaged = False  # a decompression error was reported
        # utf-8-sig drops a leading byte-order mark (and reads files without one unchanged).
        self._text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline=None)

    def _error(self, exc: BaseException) -> InputError:
        self.damaged = True
        reason = str(exc) or type(exc).__name__
        if self.lines_read:
            at = f"unreadable after line {self.lines_read}"
        else:
            at = "unreadable from the start"
        return InputError(f"{self.path}: corrupt or truncated gzip file, {at} ({reason})")

    def _damage_ahead(self) -> BaseException | None:
        """The decompression error in the next `_DAMAGE_CHECK_BYTES`, if there is one."""
        left = _DAMAGE_CHECK_BYTES
        try:
            while left > 0:
                chunk = self._text.buffer.read(min(left, 1 << 16))
                if not chunk:
                    return None
                left -= len(chunk)
        except _GZIP_ERRORS as exc:
            return exc
        return None

    def readline(self) -> str:
        try:
            line = self._text.readline()
        except _GZIP_ERRORS as exc:
            if not self.compressed:
                raise
            raise self._error(exc) from exc
        if line:
            self.lines_read += 1
        return line

    def __iter__(self) -> Iterator[str]:
        # A generator over the C-level line iterator: per line, no call into readline.
        try:
            for line in self._text:
                self.lines_read += 1
                yield line
        except _GZIP_ERRORS as exc:
            if not self.compressed:
                raise
            raise self._error(exc) from exc

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> TextInput:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if self.compressed and not self.damaged and isinstance(exc, InputError):
                damage = self._damage_ahead()
                if damage is not None:
                    reason = str(damage) or type(damage).__name__
                    raise InputError(
                        f"{self.path}: corrupt or truncated gzip file ({reason}); "
                        f"probably the cause of: {exc}"
                    ) from exc
        finally:
            self.close()


def open_text(path: Path) -> TextInput:
    """Open plain or gzipped text; gzip is detected from the magic bytes, not the name.

    A UTF-8 byte-order mark is skipped, so a file saved "with BOM" reads exactly like the
    same file without one. Undecodable bytes become U+FFFD so that they surface as an
    invalid-base `InputError` with file and line instead of a bare UnicodeDecodeError; a
    UTF-16 file (byte-order mark FF FE or FE FF) is refused up front. A corrupt or truncated
    gzip file raises `InputError` when the reading reaches the damage.
    """
    with open(path, "rb") as fh:
        head = fh.read(2)
    compressed = head == _GZIP_MAGIC
    raw: gzip.GzipFile | io.BufferedReader
    raw = gzip.GzipFile(path, "rb") if compressed else open(path, "rb")
    text = TextInput(path, raw, compressed)
    try:
        if compressed:
            try:
                head = raw.peek(2)[:2]  # the first decompressed bytes, not consumed
            except _GZIP_ERRORS as exc:
                raise text._error(exc) from exc
        if head in _UTF16_BOMS:
            raise InputError(
                f"{path}: the file is UTF-16 encoded (it starts with a UTF-16 byte-order "
                "mark); save it as UTF-8"
            )
    except BaseException:
        text.close()
        raise
    return text


def _existing_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    return p


def read_records(
    path: str | Path,
    fmt: str | None = None,
    reference: str | Path | None = None,
    label: str | None = None,
    label_column: LabelColumn = None,
    label_names: Mapping[str, str] | None = None,
) -> Iterator[SequenceRecord]:
    """Stream validated records from a BED (with ``reference``), FASTA or TSV file.

    ``label`` adds one label to every record. ``label_column`` takes labels from a column
    (0-based index or name; BED and TSV only; for TSV the default is the ``label`` column).
    ``label_names`` maps raw TSV label values to names (default 1/0 to cisplatin_binding /
    non_binding); other values are kept as they are, comma-separated values give several
    labels. Raises `InputError` for any bad input, naming file and line.
    """
    p = _existing_file(path)
    kind = detect_format(p, fmt)
    names = DEFAULT_LABEL_NAMES if label_names is None else label_names
    if label is not None:
        check_key(label, "label", str(p))
    if kind == "bed":
        records = _read_bed(p, reference, label, label_column)
    elif kind == "fasta":
        if label_column is not None:
            raise InputError(f"{p}: label_column applies to BED and TSV input, not FASTA")
        records = _read_fasta(p, label)
    else:
        records = _read_tsv(p, label, label_column, names)
    return _nonempty(p, records)


def _nonempty(path: Path, records: Iterator[SequenceRecord]) -> Iterator[SequenceRecord]:
    empty = True
    for record in records:
        empty = False
        yield record
    if empty:
        raise InputError(f"{path}: file contains no sequences")


def count_records(path: str | Path, fmt: str | None = None) -> int:
    """Number of records without validating them: cheap enough for a progress-bar total."""
    p = _existing_file(path)
    kind = detect_format(p, fmt)
    n = 0
    with open_text(p) as fh:
        if kind == "fasta":
            return sum(1 for line in fh if line.startswith(">"))
        for line in fh:
            if not line.strip():
                continue
            if kind == "bed" and line.startswith(_BED_SKIP):
                continue
            n += 1
    return n - 1 if kind == "tsv" and n else n


# --------------------------------------------------------------------------- labels


def _labels(fixed: str | None, raw: str | None, names: Mapping[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    if raw is not None:
        for part in raw.split(","):
            part = part.strip()
            if part:
                out.append(names.get(part, part))
    if fixed is not None and fixed not in out:
        out.append(fixed)
    return tuple(out)


def _column_index(path: Path, column: int | str, columns: tuple[str, ...] | list[str]) -> int:
    if isinstance(column, int):
        if column < 0:
            raise InputError(f"{path}: label_column must be >= 0, got {column}")
        return column
    if column.isdigit():
        return int(column)
    if column not in columns:
        raise InputError(
            f"{path}: label_column {column!r} is not a column name (known: {', '.join(columns)})"
        )
    return list(columns).index(column)


# --------------------------------------------------------------------------- BED


def _open_reference(path: Path, reference: str | Path | None) -> pyfaidx.Fasta:
    """Open the reference with pyfaidx, indexing into a temp dir if its folder is read-only."""
    if reference is None:
        raise InputError(f"{path}: BED input needs a reference FASTA (reference=...)")
    ref = Path(reference)
    if not ref.is_file():
        raise InputError(f"{path}: reference FASTA {ref} not found")
    if _starts_with_bom(ref):
        # The index holds byte offsets, so the mark cannot be skipped the way open_text does.
        raise InputError(
            f"{path}: reference FASTA {ref} starts with a UTF-8 byte-order mark, which a FASTA "
            "index cannot skip; remove its first 3 bytes"
        )
    import pyfaidx

    fai = Path(str(ref) + ".fai")
    try:
        if fai.exists() or _writable(ref.parent):
            return pyfaidx.Fasta(str(ref), as_raw=True, sequence_always_upper=True)
        index = Path(tempfile.mkdtemp(prefix="hsg-faidx-")) / (ref.name + ".fai")
        return pyfaidx.Fasta(
            str(ref), indexname=str(index), as_raw=True, sequence_always_upper=True
        )
    except (pyfaidx.FastaIndexingError, pyfaidx.UnsupportedCompressionFormat, OSError) as exc:
        raise InputError(f"{path}: cannot index reference {ref}: {exc}") from exc


def _starts_with_bom(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(3)
    if head[:2] == _GZIP_MAGIC:
        try:
            with gzip.open(path, "rb") as gz:
                head = gz.read(3)
        except _GZIP_ERRORS:
            return False  # pyfaidx reports the damaged file itself
    return head == codecs.BOM_UTF8


def _writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def split_bed_line(line: str) -> list[str]:
    # BED is tab-separated; UCSC also accepts runs of spaces, so fall back to any whitespace.
    return line.split("\t") if "\t" in line else line.split()


def parse_int(where: str, field: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{where}: {field} must be an integer, got {value!r}") from None


@dataclass(frozen=True)
class BedLine:
    """One data line of a BED file, with its coordinates parsed and checked."""

    where: str  # "<file>, line <n>", for messages
    cols: list[str]
    chrom: str
    start: int
    end: int


def iter_bed_lines(path: Path) -> Iterator[BedLine]:
    """Data lines of a BED file (header, track and browser lines skipped), streamed.

    Every BED consumer (regions with a reference, annotation tracks) needs the same checks:
    at least three columns, integer coordinates, 0 <= start < end, a name (column 4) that
    fits a graph key (`MAX_KEY_BYTES`); each error names the line.
    """
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith(_BED_SKIP):
                continue
            where = f"{path}, line {lineno}"
            cols = split_bed_line(line)
            if len(cols) < 3:
                raise InputError(
                    f"{where}: malformed BED line, expected at least 3 columns "
                    f"(chrom, start, end), got {len(cols)}"
                )
            start = parse_int(where, "start", cols[1])
            end = parse_int(where, "end", cols[2])
            if start < 0:
                raise InputError(f"{where}: negative start {start}")
            if start >= end:
                raise InputError(f"{where}: start {start} must be less than end {end}")
            # The name becomes part of annotation ids. Cheap test first: UTF-8 takes at most
            # 4 bytes a character, so only a longer name can be over MAX_KEY_BYTES.
            if len(cols) > 3 and len(cols[3]) > MAX_KEY_BYTES // 4 and cols[3].strip():
                check_key(cols[3], "name", where)
            yield BedLine(where, cols, cols[0], start, end)


def _read_bed(
    path: Path,
    reference: str | Path | None,
    label: str | None,
    label_column: LabelColumn,
) -> Iterator[SequenceRecord]:
    fasta = _open_reference(path, reference)
    label_idx = None if label_column is None else _column_index(path, label_column, BED_COLUMNS)
    return _bed_records(path, fasta, reference, label, label_idx)


@dataclass(frozen=True)
class BedRegion:
    """A BED line checked as far as it can be without its bases: the line, the chromosome,
    the reference's bounds and the label column. `bed_record` adds the sequence."""

    where: str  # "<file>, line <n>", for messages
    chrom: str
    start: int
    end: int
    strand: str  # "+" or "-" ("." read as "+")
    labels: tuple[str, ...]


@dataclass
class BedRegions:
    """`read_bed_regions`' answer: the regions, and the reference they index into."""

    regions: Iterator[BedRegion]
    reference: Path
    index: Path  # the reference's .fai (beside it, or in a temporary folder)


def read_bed_regions(
    path: str | Path,
    reference: str | Path | None,
    label: str | None = None,
    label_column: LabelColumn = None,
) -> BedRegions:
    """`read_records` for a BED file, less the sequence lookups: the same checks, in the same
    order (file, label, reference, label column up front; each line as it is reached), so
    that a caller can fetch the bases elsewhere — in parallel workers (`hsg.regions.lookup`)
    — and still refuse a bad input with the reader's own message."""
    p = _existing_file(path)
    if label is not None:
        check_key(label, "label", str(p))
    fasta = _open_reference(p, reference)
    try:
        label_idx = None if label_column is None else _column_index(p, label_column, BED_COLUMNS)
        lengths = {name: len(fasta[name]) for name in fasta.keys()}
        index = Path(fasta.faidx.indexname)
    finally:
        fasta.close()
    assert reference is not None  # _open_reference refuses None
    regions = _nonempty(p, _bed_regions(p, lengths, reference, label, label_idx))
    return BedRegions(regions=regions, reference=Path(reference), index=index)


def _bed_regions(
    path: Path,
    lengths: Mapping[str, int],
    reference: str | Path,
    label: str | None,
    label_idx: int | None,
) -> Iterator[BedRegion]:
    lines = iter_bed_lines(path)
    try:
        for bed in lines:
            where, cols, chrom, start, end = bed.where, bed.cols, bed.chrom, bed.start, bed.end
            if chrom not in lengths:
                raise InputError(
                    f"{where}: unknown chromosome {chrom!r} (not in reference {reference})"
                )
            if end > lengths[chrom]:
                raise InputError(
                    f"{where}: end {end} is beyond the end of {chrom} (length {lengths[chrom]})"
                )
            strand = cols[5] if len(cols) >= 6 else "+"
            if strand == ".":
                strand = "+"
            raw_label = None
            if label_idx is not None:
                if label_idx >= len(cols):
                    raise InputError(
                        f"{where}: no label column {label_idx} (line has {len(cols)} columns)"
                    )
                raw_label = cols[label_idx]
            if strand not in STRANDS:  # build_record's first check, before the bases: made
                # here so that a region is whole without them (windows need the strand)
                raise InputError(f"{where}: strand must be '+' or '-', got {strand!r}")
            yield BedRegion(where, chrom, start, end, strand, _labels(label, raw_label, {}))
    except InputError as exc:
        # Raised here, outside the line reader (or thrown in by the consumer): hand it to the
        # reader, whose open file replaces it if a damaged gzip file caused it
        # (TextInput.__exit__).
        lines.throw(exc)
        raise  # not reached: throw re-raises exc or its replacement
    finally:
        lines.close()


def bed_record(region: BedRegion, fasta: pyfaidx.Fasta) -> SequenceRecord:
    """The record of `region`, its bases from `fasta` (reverse-complemented on ``-``)."""
    return build_record(
        where=region.where,
        sequence=fasta[region.chrom][region.start : region.end],
        chrom=region.chrom,
        start=region.start,
        end=region.end,
        strand=region.strand,
        labels=region.labels,
        reverse_complement_minus=True,
    )


def _bed_records(
    path: Path,
    fasta: pyfaidx.Fasta,
    reference: str | Path,
    label: str | None,
    label_idx: int | None,
) -> Iterator[SequenceRecord]:
    lengths = {name: len(fasta[name]) for name in fasta.keys()}
    regions = _bed_regions(path, lengths, reference, label, label_idx)
    try:
        for region in regions:
            yield bed_record(region, fasta)
    except InputError as exc:
        regions.throw(exc)  # to the line reader, as the regions' own errors (see there)
        raise  # not reached: throw re-raises exc or its replacement
    finally:
        regions.close()
        fasta.close()


# --------------------------------------------------------------------------- FASTA


def _fasta_record(
    path: Path, header_line: int, name: str, pieces: list[str], label: str | None
) -> SequenceRecord:
    where = f"{path}, line {header_line} (record {shorten(name)!r})"
    sequence = "".join(pieces)
    chrom = start = end = None
    strand = "+"
    match = _CANONICAL_ID.match(name)
    if match and int(match["end"]) - int(match["start"]) == len(sequence):
        chrom, start, end = match["chrom"], int(match["start"]), int(match["end"])
        strand = match["strand"]
    # Bases were validated line by line in _read_fasta; build_record re-checks cheaply.
    return build_record(
        where=where,
        sequence=sequence,
        chrom=chrom,
        start=start,
        end=end,
        strand=strand,
        id=name,
        labels=_labels(label, None, {}),
    )


def _read_fasta(path: Path, label: str | None) -> Iterator[SequenceRecord]:
    name: str | None = None
    header_line = 0
    pieces: list[str] = []
    length = 0
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            if line.startswith(">"):
                if name is not None:
                    yield _fasta_record(path, header_line, name, pieces, label)
                words = line[1:].split()
                if not words:
                    raise InputError(f"{path}, line {lineno}: empty FASTA header")
                name, header_line, pieces, length = words[0], lineno, [], 0
                continue
            if name is None:
                raise InputError(f"{path}, line {lineno}: sequence before the first '>' header")
            chunk = line.upper()
            check_bases(chunk, f"{path}, line {lineno} (record {shorten(name)!r})", length)
            pieces.append(chunk)
            length += len(chunk)
    if name is not None:
        yield _fasta_record(path, header_line, name, pieces, label)


# --------------------------------------------------------------------------- TSV


def _read_tsv(
    path: Path,
    label: str | None,
    label_column: LabelColumn,
    names: Mapping[str, str],
) -> Iterator[SequenceRecord]:
    fh = open_text(path)
    try:
        header = [_header_name(h) for h in fh.readline().rstrip("\r\n").split("\t")]
        columns = _tsv_columns(path, header, label_column)
    except BaseException:
        fh.close()
        raise
    return _tsv_records(path, fh, header, columns, label, names)


def _header_name(cell: str) -> str:
    # A stray byte-order mark (open_text drops only a leading one) or spaces around a name
    # must not hide a column: a lost "id" column would silently turn into generated ids.
    return cell.replace("\ufeff", "").strip()


def _tsv_columns(path: Path, header: list[str], label_column: LabelColumn) -> dict[str, int]:
    """Index of each known column; names match case-insensitively, each at most once."""
    if header == [""]:
        raise InputError(f"{path}: file contains no sequences (empty file, no header)")
    index: dict[str, int] = {}
    for i, name in enumerate(header):
        key = name.lower()
        if key not in TSV_COLUMNS:
            continue
        if key in index:
            raise InputError(
                f"{path}, line 1: column {key!r} appears twice (columns {index[key] + 1} "
                f"and {i + 1})"
            )
        index[key] = i
    missing = [c for c in ("sequence",) if c not in index]
    coords = [c for c in ("chrom", "start", "end") if c in index]
    if coords and len(coords) < 3:
        missing += [c for c in ("chrom", "start", "end") if c not in index]
    if not coords and "id" not in index:
        missing.append("id (or chrom, start, end)")
    if missing:
        raise InputError(
            f"{path}, line 1: missing TSV column(s): {', '.join(missing)} "
            f"(expected header: {' '.join(TSV_COLUMNS)})"
        )
    columns = {c: index[c] for c in ("id", "chrom", "start", "end", "strand", "sequence")
               if c in index}  # fmt: skip
    if label_column is not None:
        li = _column_index(path, label_column, header)
        if li >= len(header):
            raise InputError(f"{path}: label_column {li} is beyond the {len(header)} columns")
        columns["label"] = li
    elif "label" in index:
        columns["label"] = index["label"]
    return columns


def _tsv_records(
    path: Path,
    fh: IO[str],
    header: list[str],
    columns: dict[str, int],
    label: str | None,
    names: Mapping[str, str],
) -> Iterator[SequenceRecord]:
    with fh:
        for lineno, line in enumerate(fh, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            fields = line.split("\t")
            if len(fields) != len(header):
                raise InputError(
                    f"{where}: expected {len(header)} tab-separated fields, got {len(fields)}"
                )
            get = {k: fields[i].strip() for k, i in columns.items()}
            chrom = start = end = None
            if "chrom" in get and get["chrom"]:
                chrom = get["chrom"]
                start = parse_int(where, "start", get["start"])
                end = parse_int(where, "end", get["end"])
                if start < 0:
                    raise InputError(f"{where}: negative start {start}")
                if start >= end:
                    raise InputError(f"{where}: start {start} must be less than end {end}")
                if end - start != len(get["sequence"]):
                    raise InputError(
                        f"{where}: sequence length {len(get['sequence'])} does not match "
                        f"end - start = {end - start}"
                    )
            record_id = get.get("id")
            if record_id is not None:
                if not record_id:
                    # Never a generated id in a file that declares ids: a re-run of the same
                    # regions would then create a second node for this one.
                    raise InputError(f"{where}: empty id (the header has an id column)")
                where = f"{where} (record {shorten(record_id)!r})"
            yield build_record(
                where=where,
                sequence=get["sequence"],
                chrom=chrom,
                start=start,
                end=end,
                strand=get.get("strand") or "+",
                id=record_id,
                labels=_labels(label, get.get("label"), names),
            )
