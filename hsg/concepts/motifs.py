"""From a feature's strongest activations to a motif, compared with JASPAR.

1. **Seqlets.** The tokens where the feature is strongest, each widened by ``flank`` bases on
   both sides (N past the sequence ends), best first; a seqlet that overlaps an already taken
   one of the same sequence by more than half is a duplicate and skipped, so one long
   activated stretch does not fill the motif with copies of itself.
2. **Alignment.** NT tokens are fixed 6-mers, so a motif sits anywhere inside them and on
   either strand. Seqlets are aligned to a profile started from the strongest one: each is
   placed at the shift (±``max_shift``) and orientation where its bases score best against
   the profile's log-odds, the profile is rebuilt, and this repeats until no placement
   changes. This is the classic iterative alignment of seqlets; it needs no motif database.
3. **PWM.** Base frequencies of the columns most seqlets cover, trimmed to the span between
   the first and last column of at least ``min_information`` bits.
4. **Comparison.** Tomtom (memelite's maintained implementation, both orientations) against
   every matrix of JASPAR CORE from pyjaspar's bundled release; q-values are
   Benjamini–Hochberg over the targets of each query, as Tomtom reports them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hsg.concepts.data import TokenActivations

BASES = "ACGT"
_CODE = {b: i for i, b in enumerate(BASES)}
_PSEUDO = 0.5  # per base and column when a profile is turned into log-odds


@dataclass(frozen=True)
class MotifConfig:
    """Parameters of seqlet extraction, alignment and comparison; round-trips through JSON."""

    seqlets: int = 100  # strongest activations used per feature
    min_seqlets: int = 5  # fewer usable seqlets: no motif
    flank: int = 6  # bases added on each side of the token
    max_shift: int = 6  # alignment search, bases either way
    min_coverage: float = 0.5  # PWM columns covered by at least this fraction of seqlets
    min_information: float = 0.5  # bits; trims weak flanks
    iterations: int = 10
    collection: str = "CORE"
    tax_group: str = "vertebrates"
    release: str | None = None  # pyjaspar's latest when None
    max_qvalue: float = 0.05  # RESEMBLES is written only for matches at or below this
    top_matches: int = 5

    def __post_init__(self) -> None:
        if self.seqlets < 1 or self.min_seqlets < 1:
            raise ValueError("seqlets and min_seqlets must be at least 1")
        if self.flank < 0 or self.max_shift < 0:
            raise ValueError("flank and max_shift must not be negative")
        if not 0 < self.min_coverage <= 1:
            raise ValueError("min_coverage must be in (0, 1]")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> MotifConfig:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Seqlet:
    sequence_id: str
    start: int  # base span of the window in the sequence (may run past its ends)
    end: int
    token: tuple[int, int]  # the activating token's span
    activation: float
    text: str  # window bases, N outside the sequence


@dataclass
class Match:
    motif_id: str  # JASPAR matrix id
    name: str
    pvalue: float
    qvalue: float
    offset: int
    orientation: str  # '+' or '-' (the target's reverse complement)

    @property
    def annotation_id(self) -> str:
        """The (:Annotation) node of the matrix, the same JASPAR scan hits link to."""
        return f"jaspar:{self.motif_id}"


@dataclass
class FeatureMotif:
    """One feature's seqlets, aligned PWM (rows = positions, columns = ACGT) and matches."""

    feature: str
    seqlets: list[Seqlet]
    pwm: np.ndarray | None  # None when too few seqlets or no informative column
    orientations: list[str] = field(default_factory=list)
    matches: list[Match] = field(default_factory=list)

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    def consensus(self) -> str:
        if self.pwm is None:
            return ""
        return "".join(BASES[i] for i in np.argmax(self.pwm, axis=1))


# --------------------------------------------------------------------------- seqlets


def seqlets(activations: TokenActivations, column: int, config: MotifConfig) -> list[Seqlet]:
    """The feature's strongest tokens as de-duplicated windows (see the module docstring)."""
    index = activations.index
    if not index.sequences:
        raise ValueError("seqlets need the sequence texts (TokenIndex.sequences)")
    col = activations.values[:, column].tocoo()
    order = np.argsort(-col.data, kind="stable")
    seq_of_row = index.sequence_of_row()
    width_half = config.flank
    taken: dict[int, list[tuple[int, int]]] = {}
    out: list[Seqlet] = []
    for k in order:
        if len(out) >= config.seqlets:
            break
        row = int(col.row[k])
        s = int(seq_of_row[row])
        t0, t1 = (int(x) for x in index.spans[row])
        centre = (t0 + t1) // 2
        start = centre - 3 - width_half  # every window is a 6-mer's width plus the flanks
        end = start + 6 + 2 * width_half
        if any(min(end, b) - max(start, a) > (end - start) / 2 for a, b in taken.get(s, [])):
            continue
        taken.setdefault(s, []).append((start, end))
        text = index.sequences[s]
        window = "".join(text[p].upper() if 0 <= p < len(text) else "N" for p in range(start, end))
        out.append(Seqlet(index.sequence_ids[s], start, end, (t0, t1), float(col.data[k]), window))
    return out


# --------------------------------------------------------------------------- alignment


def _onehot(texts: Sequence[str]) -> np.ndarray:
    """[n, W, 4] one-hot; N (and anything else) is an all-zero row."""
    arr = np.zeros((len(texts), len(texts[0]) if texts else 0, 4))
    for i, t in enumerate(texts):
        for j, b in enumerate(t):
            c = _CODE.get(b)
            if c is not None:
                arr[i, j, c] = 1.0
    return arr


def align(texts: Sequence[str], max_shift: int, iterations: int) -> tuple[np.ndarray, list]:
    """Iterative alignment: returns the counts over a frame of width W + 2·max_shift and,
    per seqlet, its (shift, orientation)."""
    x = _onehot(texts)
    n, w, _ = x.shape
    rc = x[:, ::-1, ::-1]  # reverse complement in ACGT order
    frame = w + 2 * max_shift
    place = [(max_shift, "+")] * n

    def counts_of(placement):
        c = np.zeros((frame, 4))
        for i, (shift, strand) in enumerate(placement):
            c[shift : shift + w] += x[i] if strand == "+" else rc[i]
        return c

    counts = np.zeros((frame, 4))
    counts[max_shift : max_shift + w] = x[0]  # start from the strongest seqlet
    both = np.stack([x, rc], axis=1)  # [n, 2, W, 4]
    shifts = frame - w + 1
    for _ in range(iterations):
        freq = (counts + _PSEUDO) / (counts.sum(axis=1, keepdims=True) + 4 * _PSEUDO)
        logodds = np.log2(freq / 0.25)
        windows = np.stack([logodds[s : s + w] for s in range(shifts)])  # [shifts, W, 4]
        scores = np.einsum("nowc,swc->nso", both, windows)  # [n, shifts, 2]
        flat = scores.reshape(n, -1)
        # first best placement: lowest shift, then '+' before '-', as a loop would pick
        best = np.argmax(flat > flat.max(axis=1, keepdims=True) - 1e-9, axis=1)
        new = [(int(b) // 2, "+" if int(b) % 2 == 0 else "-") for b in best]
        counts = counts_of(new)
        if new == place:
            break
        place = new
    return counts, place


def pwm_from_counts(counts: np.ndarray, n_seqlets: int, config: MotifConfig) -> np.ndarray | None:
    """Frequencies of the well-covered columns, trimmed to the informative core."""
    cover = counts.sum(axis=1)
    keep = np.nonzero(cover >= config.min_coverage * n_seqlets)[0]
    if keep.size == 0:
        return None
    block = counts[keep[0] : keep[-1] + 1]
    freq = (block + 0.1) / (block.sum(axis=1, keepdims=True) + 0.4)
    info = 2.0 + (freq * np.log2(freq)).sum(axis=1)
    strong = np.nonzero(info >= config.min_information)[0]
    if strong.size == 0:
        return None
    return freq[strong[0] : strong[-1] + 1]


def feature_motif(activations: TokenActivations, column: int, config: MotifConfig) -> FeatureMotif:
    """Seqlets, alignment and PWM of one feature (no comparison yet)."""
    found = seqlets(activations, column, config)
    feature = activations.feature_ids[column]
    if len(found) < config.min_seqlets:
        return FeatureMotif(feature, found, None)
    counts, place = align([s.text for s in found], config.max_shift, config.iterations)
    pwm = pwm_from_counts(counts, len(found), config)
    return FeatureMotif(feature, found, pwm, [strand for _, strand in place])


# --------------------------------------------------------------------------- JASPAR


@dataclass
class MotifDatabase:
    """Target matrices as frequencies (rows = positions, columns = ACGT)."""

    release: str
    ids: list[str]
    names: list[str]
    frequencies: list[np.ndarray]


def jaspar_database(config: MotifConfig) -> MotifDatabase:
    """JASPAR CORE from pyjaspar's bundled SQLite (no network)."""
    from hsg.regions.motifs import load_jaspar_matrices

    release, matrices = load_jaspar_matrices(config.collection, config.tax_group, config.release)
    freqs = [m.counts / np.maximum(m.counts.sum(axis=1, keepdims=True), 1e-9) for m in matrices]
    return MotifDatabase(
        f"{release} {config.collection} {config.tax_group}",
        [m.motif_id for m in matrices],
        [m.name for m in matrices],
        freqs,
    )


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values of one row of p-values."""
    n = len(p)
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def compare(motifs: Sequence[FeatureMotif], database: MotifDatabase, top: int = 5) -> None:
    """Fill each motif's `matches` (best first) by Tomtom against the database."""
    from memelite import tomtom

    queries = [m for m in motifs if m.pwm is not None]
    if not queries:
        return
    targets = [f.T.astype(np.float64) for f in database.frequencies]
    pvals, _, offsets, _, strands = tomtom(
        [m.pwm.T.astype(np.float64) for m in queries], targets, n_jobs=1
    )
    for i, motif in enumerate(queries):
        p = np.asarray(pvals[i], dtype=np.float64)
        q = _bh(p)
        order = np.argsort(p, kind="stable")[:top]
        motif.matches = [
            Match(
                database.ids[j],
                database.names[j],
                float(p[j]),
                float(q[j]),
                int(offsets[i, j]),
                "-" if int(strands[i, j]) == 1 else "+",
            )
            for j in order
        ]


# --------------------------------------------------------------------------- logos


def save_logo(motif: FeatureMotif, path: str | Path, title: str | None = None) -> Path | None:
    """Information-content logo of the PWM as a PNG (logomaker); None without a PWM."""
    if motif.pwm is None:
        return None
    import logomaker
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    pwm = np.asarray(motif.pwm, dtype=np.float64)
    pwm = pwm / pwm.sum(axis=1, keepdims=True)  # rounded PWMs (the graph's JSON) sum to ≈ 1
    freq = pd.DataFrame(pwm, columns=list(BASES))
    info = logomaker.transform_matrix(freq, from_type="probability", to_type="information")
    fig, ax = plt.subplots(figsize=(max(2.5, 0.4 * len(freq)), 1.8))
    try:
        logomaker.Logo(info, ax=ax)
        ax.set_ylim(0, 2)
        ax.set_ylabel("bits")
        ax.set_xticks([])
        ax.set_title(title or motif.feature, fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
