"""Sequence-scan annotations: G-quadruplex patterns and JASPAR position weight matrices.

Few genomic windows overlap curated intervals, so scans are what connect most sequences to
(:Annotation) nodes. Both scans report positions on the sequence as given (0-based
half-open) and a strand relative to it.

G-quadruplexes use the Quadparser pattern (four or more runs of >= 3 G with loops of 1-7
nt). Matches are leftmost, greedy and non-overlapping per strand, so one hit can span more
than four G-runs; C-runs on the given sequence are G4s on the opposite strand and are
reported with strand ``-`` and the G-rich text. All hits share one (:Annotation) node,
``g4``; the strand lives on the relationship.

JASPAR PWMs are log2-odds against a uniform background with pseudocounts of
``0.25 * sqrt(N)`` per base (N = sites in the column, as recommended for JASPAR). Scores are
kept as integers in 1/100 bit, which makes the score distribution under the background an
exact dynamic program and the threshold for a p-value exact for the matrix that is scanned.
A motif whose best possible score is more probable than the p-value (short motifs: a perfect
4-mer has p = 1/256) can never be significant and is not scanned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from hsg.regions.annotations import MotifHit
from hsg.regions.records import reverse_complement

# --------------------------------------------------------------------------- G4

G4_ANNOTATION_ID = "g4"
G4_KIND = "g_quadruplex"
G4_NAME = "G-quadruplex"
G4_SOURCE = "pattern G{3+}(N{1-7}G{3+}){3+}"

_G4_PLUS = re.compile(r"G{3,}(?:[ACGTN]{1,7}G{3,}){3,}")
_G4_MINUS = re.compile(r"C{3,}(?:[ACGTN]{1,7}C{3,}){3,}")


def find_g_quadruplexes(sequence: str) -> list[MotifHit]:
    """Putative G-quadruplexes on both strands, sorted by start."""
    seq = sequence.upper()
    hits = []
    for pattern, strand in ((_G4_PLUS, "+"), (_G4_MINUS, "-")):
        for m in pattern.finditer(seq):
            text = m.group() if strand == "+" else reverse_complement(m.group())
            hits.append(
                MotifHit(
                    annotation_id=G4_ANNOTATION_ID,
                    kind=G4_KIND,
                    name=G4_NAME,
                    source=G4_SOURCE,
                    start=m.start(),
                    end=m.end(),
                    strand=strand,
                    motif_id=G4_ANNOTATION_ID,
                    matched=text,
                )
            )
    hits.sort(key=lambda h: (h.start, h.strand))
    return hits


# --------------------------------------------------------------------------- PWMs

JASPAR_KIND = "jaspar_motif"
SCALE = 100  # integer score units per bit
BACKGROUND = 0.25
_ROWS_PER_BLOCK = 8_192  # windows per matrix product: keeps the score block cache-friendly

_CODE = np.full(256, 4, dtype=np.uint8)  # A C G T -> 0..3, anything else -> 4 (N)
for _i, _b in enumerate("ACGT"):
    _CODE[ord(_b)] = _i
    _CODE[ord(_b.lower())] = _i
# Code 4 (N, padding) is an all-zero row: such windows are removed after scoring.
_ONEHOT = np.vstack([np.eye(4, dtype=np.float32), np.zeros((1, 4), dtype=np.float32)])


@dataclass(frozen=True)
class MotifMatrix:
    """A count (or frequency) matrix, rows = positions, columns = A, C, G, T."""

    motif_id: str
    name: str
    counts: np.ndarray


@dataclass(frozen=True)
class ScoredMotif:
    """A motif ready to scan: integer weights, its exact null distribution and threshold."""

    motif_id: str
    name: str
    weights: np.ndarray  # (length, 4) int, 1/SCALE bits
    min_score: int
    survival: np.ndarray  # survival[k] = P(score >= min_score + k) under the background
    threshold: int | None  # None: no score reaches the p-value

    @property
    def length(self) -> int:
        return int(self.weights.shape[0])

    def pvalue(self, score: int) -> float:
        k = min(max(score - self.min_score, 0), len(self.survival) - 1)
        return float(self.survival[k])


def log_odds(counts: np.ndarray) -> np.ndarray:
    """log2((count + pseudo) / (N + 4 pseudo) / 0.25) with pseudo = 0.25 * sqrt(N) per column."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=1, keepdims=True)
    pseudo = BACKGROUND * np.sqrt(np.maximum(n, 1e-9))
    probs = (counts + pseudo) / (n + 4 * pseudo)
    return np.log2(probs / BACKGROUND)


def score_distribution(weights: np.ndarray) -> tuple[int, np.ndarray]:
    """Exact survival function of the integer PWM score of a uniform random sequence.

    Dynamic programming over columns: the distribution of the partial score is shifted by
    each base's weight and mixed with probability 1/4. Returns the minimum score and
    ``survival[k] = P(score >= min + k)``.
    """
    w = np.asarray(weights, dtype=np.int64)
    mins = w.min(axis=1)
    shifted = w - mins[:, None]
    total = int(shifted.max(axis=1).sum())
    dist = np.zeros(total + 1)
    dist[0] = 1.0
    reach = 0  # highest partial score so far
    for column in shifted:
        new = np.zeros(total + 1)
        for v in column:
            new[v : v + reach + 1] += BACKGROUND * dist[: reach + 1]
        reach += int(column.max())
        dist = new
    survival = np.cumsum(dist[::-1])[::-1]
    return int(mins.sum()), survival


def prepare_motif(matrix: MotifMatrix, pvalue: float) -> ScoredMotif:
    """Integer weights plus the smallest score whose background tail is within ``pvalue``."""
    weights = np.rint(log_odds(matrix.counts) * SCALE).astype(np.int64)
    min_score, survival = score_distribution(weights)
    ok = np.nonzero(survival <= pvalue)[0]
    threshold = int(min_score + ok[0]) if ok.size else None
    return ScoredMotif(matrix.motif_id, matrix.name, weights, min_score, survival, threshold)


def load_jaspar_matrices(
    collection: str = "CORE", tax_group: str = "vertebrates", release: str | None = None
) -> tuple[str, list[MotifMatrix]]:
    """Latest versions of the JASPAR matrices from pyjaspar's bundled SQLite database.

    Returns the release name actually used and the matrices.
    """
    try:
        import pyjaspar
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "JASPAR motif scanning needs pyjaspar: pip install 'hsg[motifs]'"
        ) from exc
    releases = list(pyjaspar.jaspar_releases)
    release = release or pyjaspar.JASPAR_LATEST_RELEASE
    if release not in releases:
        raise ValueError(f"unknown JASPAR release {release!r}; available: {', '.join(releases)}")
    db = pyjaspar.jaspardb(release=release)
    try:
        motifs = db.fetch_motifs(collection=collection, tax_group=tax_group)
    finally:
        db.conn.close()
    matrices = [
        MotifMatrix(
            motif_id=m.matrix_id,
            name=m.name,
            counts=np.array([m.counts[b] for b in "ACGT"], dtype=np.float64).T,
        )
        for m in motifs
    ]
    if not matrices:
        raise ValueError(f"{release}: no motifs for collection={collection} tax_group={tax_group}")
    return release, matrices


@dataclass
class _Bucket:
    """Motifs of similar length scanned with one matrix product (columns: + then - strand)."""

    width: int
    motifs: list[ScoredMotif]
    kernel: np.ndarray = field(repr=False)  # (4 * width, 2 * n_motifs) float32
    thresholds: np.ndarray = field(repr=False)  # (2 * n_motifs,) float32
    lengths: np.ndarray = field(repr=False)  # (2 * n_motifs,) motif length per column


def _bucket(motifs: list[ScoredMotif]) -> _Bucket:
    width = max(m.length for m in motifs)
    n = len(motifs)
    kernel = np.zeros((4, width, 2 * n), dtype=np.float32)
    for j, m in enumerate(motifs):
        length = m.length
        kernel[:, :length, j] = m.weights.T
        # Reverse strand: position w of the window pairs with motif position length-1-w,
        # base c with its complement 3-c (A<->T, C<->G in ACGT order).
        kernel[:, :length, n + j] = m.weights[::-1, ::-1].T
    thresholds = np.array([m.threshold for m in motifs] * 2, dtype=np.float32)
    lengths = np.array([m.length for m in motifs] * 2, dtype=np.int64)
    return _Bucket(width, motifs, kernel.reshape(4 * width, 2 * n), thresholds, lengths)


def _true_positions(mask: np.ndarray) -> np.ndarray:
    """Flat indices of True in a mostly-False C-contiguous bool array.

    Hits are ~1e-4 of all (position, motif) pairs; testing 8 flags per uint64 word first is
    several times faster than ``np.flatnonzero`` on the whole array.
    """
    flat = mask.reshape(-1)
    whole = flat.size - flat.size % 8
    words = np.flatnonzero(flat[:whole].view(np.uint64))
    cand = (words[:, None] * 8 + np.arange(8)).reshape(-1)
    found = cand[flat[cand]]
    if whole < flat.size:
        found = np.concatenate([found, whole + np.flatnonzero(flat[whole:])])
    return found


class MotifScanner:
    """Scan sequences for JASPAR motifs on both strands at a fixed p-value.

    All motifs of similar length are scored at once as one matrix product of one-hot
    sliding windows against the stacked PWMs (both strands), so the cost is a few BLAS calls
    per batch of sequences rather than a Python loop per motif. Windows that run past the
    end of a sequence or contain N are dropped after the fact, on the few candidate hits.

    Throughput is BLAS-bound; on a machine shared with other busy processes, multithreaded
    OpenBLAS spin-waits and can be several times slower than ``OPENBLAS_NUM_THREADS=1``.
    """

    def __init__(
        self,
        collection: str = "CORE",
        tax_group: str = "vertebrates",
        pvalue: float = 1e-4,
        release: str | None = None,
    ) -> None:
        release_used, matrices = load_jaspar_matrices(collection, tax_group, release)
        self._setup(matrices, pvalue, f"{release_used} {collection} {tax_group}")

    @classmethod
    def from_matrices(
        cls, matrices: Sequence[MotifMatrix], pvalue: float = 1e-4, source: str = "custom"
    ) -> MotifScanner:
        """A scanner over your own matrices (tests, other databases)."""
        scanner = cls.__new__(cls)
        scanner._setup(list(matrices), pvalue, source)
        return scanner

    def _setup(self, matrices: list[MotifMatrix], pvalue: float, source: str) -> None:
        if not 0 < pvalue < 1:
            raise ValueError(f"pvalue must be in (0, 1), got {pvalue}")
        self.pvalue = pvalue
        self.source = source
        prepared = [prepare_motif(m, pvalue) for m in matrices]
        self.motifs = [m for m in prepared if m.threshold is not None]
        self.unreachable = [m.motif_id for m in prepared if m.threshold is None]
        # Buckets by length keep the zero padding of short motifs (wasted flops) small.
        edges = (8, 12, 16, 20, 24)
        groups: dict[int, list[ScoredMotif]] = {}
        for m in self.motifs:
            key = next((e for e in edges if m.length <= e), 10**6)
            groups.setdefault(key, []).append(m)
        self._buckets = [_bucket(ms) for _, ms in sorted(groups.items())]

    def __len__(self) -> int:
        return len(self.motifs)

    def scan(self, sequence: str) -> list[MotifHit]:
        """Hits in one sequence, sorted by start."""
        return next(self.scan_many([sequence]))

    def scan_many(
        self, sequences: Iterable[str], batch_size: int = 256
    ) -> Iterator[list[MotifHit]]:
        """Hits per sequence, in input order; streams in batches of ``batch_size``."""
        batch: list[str] = []
        for seq in sequences:
            batch.append(seq)
            if len(batch) == batch_size:
                yield from self._scan_batch(batch)
                batch = []
        if batch:
            yield from self._scan_batch(batch)

    def _scan_batch(self, batch: list[str]) -> list[list[MotifHit]]:
        upper = [s.upper() for s in batch]
        results: list[list[MotifHit]] = [[] for _ in upper]
        longest = max((len(s) for s in upper), default=0)
        if longest == 0 or not self._buckets:
            return results
        max_width = max(b.width for b in self._buckets)
        codes = np.full((len(upper), longest + max_width - 1), 4, dtype=np.uint8)
        for i, s in enumerate(upper):
            codes[i, : len(s)] = _CODE[np.frombuffer(s.encode("ascii", "replace"), np.uint8)]
        onehot = _ONEHOT[codes]  # (B, L + W - 1, 4); N and padding are all-zero rows
        n_before = np.zeros((len(upper), codes.shape[1] + 1), dtype=np.int32)
        np.cumsum(codes == 4, axis=1, out=n_before[:, 1:])  # Ns before each position
        seq_len = np.array([len(s) for s in upper], dtype=np.int64)
        step = max(1, _ROWS_PER_BLOCK // longest)
        for bucket in self._buckets:
            n = len(bucket.motifs)
            view = np.lib.stride_tricks.sliding_window_view(
                onehot[:, : longest + bucket.width - 1], bucket.width, axis=1
            )  # (B, L, 4, W)
            for lo in range(0, len(upper), step):
                windows = view[lo : lo + step].reshape(-1, 4 * bucket.width)
                scores = windows @ bucket.kernel
                flat = _true_positions(scores >= bucket.thresholds)
                row, col = np.divmod(flat, 2 * n)
                seq_i, pos = np.divmod(row, longest)
                seq_i += lo
                end = pos + bucket.lengths[col]
                keep = (end <= seq_len[seq_i]) & (n_before[seq_i, end] == n_before[seq_i, pos])
                values = scores.reshape(-1)[flat[keep]]
                for i, p, c, v in zip(
                    seq_i[keep].tolist(), pos[keep].tolist(), col[keep].tolist(),
                    np.rint(values).astype(np.int64).tolist(), strict=True,
                ):  # fmt: skip
                    strand = "+" if c < n else "-"
                    results[i].append(self._hit(upper[i], p, bucket.motifs[c % n], strand, v))
        for hits in results:
            hits.sort(key=lambda h: (h.start, h.motif_id, h.strand))
        return results

    def _hit(self, seq: str, pos: int, motif: ScoredMotif, strand: str, score: int) -> MotifHit:
        end = pos + motif.length
        text = seq[pos:end] if strand == "+" else reverse_complement(seq[pos:end])
        return MotifHit(
            annotation_id=f"jaspar:{motif.motif_id}",
            kind=JASPAR_KIND,
            name=motif.name,
            source=self.source,
            start=pos,
            end=end,
            strand=strand,
            score=score / SCALE,
            motif_id=motif.motif_id,
            matched=text,
            threshold=motif.threshold / SCALE,
            pvalue=motif.pvalue(score),
        )
