"""Annotations: interval overlaps, G-quadruplexes and JASPAR PWM scans."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from hsg.regions.annotations import AnnotationHit, MotifHit
from hsg.regions.intervals import Interval, IntervalIndex, load_bed_intervals
from hsg.regions.motifs import (
    MotifMatrix,
    MotifScanner,
    find_g_quadruplexes,
    log_odds,
    prepare_motif,
    score_distribution,
)
from hsg.regions.records import InputError, SequenceRecord, reverse_complement

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"


# --------------------------------------------------------------------------- intervals


@pytest.fixture(scope="module")
def elements() -> IntervalIndex:
    return load_bed_intervals(FIXTURES / "elements.bed")


def test_bed_intervals_load(elements: IntervalIndex) -> None:
    assert len(elements) == 4
    assert elements.chromosomes == ["chr1", "chr2"]
    (hit,) = elements.overlaps("chr2", 0, 15)
    assert hit == AnnotationHit(
        annotation_id="refseq:chr2:10-20:promoter",
        kind="refseq_functional_element",
        name="promoter",
        source="elements.bed",
        start=10,
        end=15,
        strand="+",
    )


def test_overlap_is_half_open(elements: IntervalIndex) -> None:
    def names(start: int, end: int) -> set[str]:
        return {h.name for h in elements.overlaps("chr2", start, end)}

    # promoter is chr2:[10, 20)
    assert names(0, 10) == set()  # ends exactly where it starts
    assert names(20, 30) == set()  # starts exactly where it ends
    assert names(9, 11) == {"promoter"}
    assert names(19, 20) == {"promoter"}
    hit = elements.overlaps("chr2", 19, 25)[0]
    assert (hit.start, hit.end) == (0, 1)


def test_overlap_positions_on_minus_strand(elements: IntervalIndex) -> None:
    # Sequence chr2:[15, 25) read on -: position 0 is genomic 24; the promoter's
    # genomic [15, 20) sits at sequence [5, 10) and its + strand becomes -.
    (hit,) = elements.overlaps("chr2", 15, 25, strand="-")
    assert (hit.start, hit.end, hit.strand) == (5, 10, "-")
    (plus,) = elements.overlaps("chr2", 15, 25, strand="+")
    assert (plus.start, plus.end, plus.strand) == (0, 5, "+")


def test_long_interval_found_far_from_its_start(elements: IntervalIndex) -> None:
    hits = {h.name: h for h in elements.overlaps("chr1", 90_000, 90_100)}
    assert set(hits) == {"silencer"}  # chr1:[0, 100000) spans the query
    assert (hits["silencer"].start, hits["silencer"].end, hits["silencer"].strand) == (0, 100, ".")
    inside = {h.name for h in elements.overlaps("chr1", 155, 158)}
    assert inside == {"silencer", "enhancer", "protein_bind:_CTCF"}


def test_overlaps_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    ivs = []
    for i in range(400):
        start = int(rng.integers(0, 10_000))
        length = int(rng.choice([1, 5, 50, 500, 5_000]))
        ivs.append(Interval("c", start, start + length, f"e{i}"))
    index = IntervalIndex(ivs, source="random")
    for _ in range(300):
        qs = int(rng.integers(0, 12_000))
        qe = qs + int(rng.integers(1, 300))
        expected = {iv.name for iv in ivs if iv.start < qe and iv.end > qs}
        assert {iv.name for iv in index.overlapping("c", qs, qe)} == expected


def test_annotate_record(elements: IntervalIndex) -> None:
    rec = SequenceRecord("chr2:5-15(+)", "chr2", 5, 15, "+", "A" * 10)
    assert [h.annotation_id for h in elements.annotate(rec)] == ["refseq:chr2:10-20:promoter"]
    no_coords = SequenceRecord("seqA", None, None, None, "+", "ACGT")
    assert elements.annotate(no_coords) == []
    assert elements.overlaps("chrX", 0, 100) == []


def test_bed_interval_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t1\t5\tx\nchr1\t9\n")
    with pytest.raises(InputError, match=r"bad.bed, line 2: malformed"):
        load_bed_intervals(bad)
    empty = tmp_path / "empty.bed"
    empty.write_text("# nothing\n")
    with pytest.raises(InputError, match="no intervals"):
        load_bed_intervals(empty)


def test_hit_properties_for_the_writer() -> None:
    hit = AnnotationHit("refseq:chr1:0-5:enhancer", "refseq_functional_element", "enhancer",
                        "x.bed", 0, 5, "+")  # fmt: skip
    assert hit.relationship == "OVERLAPS"
    assert hit.node_properties() == {"id": "refseq:chr1:0-5:enhancer",
                                     "kind": "refseq_functional_element", "name": "enhancer",
                                     "source": "x.bed"}  # fmt: skip
    assert hit.relationship_properties() == {"start": 0, "end": 5, "strand": "+"}
    motif = MotifHit("g4", "g_quadruplex", "G-quadruplex", "p", 1, 9, "-", matched="GGG")
    assert motif.relationship == "HAS_MOTIF"
    assert motif.relationship_properties()["matched"] == "GGG"


# --------------------------------------------------------------------------- G4

G4 = "GGGTTAGGGTTAGGGTTAGGG"


def test_g4_plus_strand() -> None:
    seq = "ATATAT" + G4 + "ATATAT"
    (hit,) = find_g_quadruplexes(seq)
    assert (hit.start, hit.end, hit.strand, hit.matched) == (6, 6 + len(G4), "+", G4)
    assert (hit.annotation_id, hit.kind, hit.name) == ("g4", "g_quadruplex", "G-quadruplex")


def test_g4_minus_strand_reported_as_g_rich_text() -> None:
    seq = "AT" + reverse_complement(G4) + "TA"
    (hit,) = find_g_quadruplexes(seq.lower())
    assert (hit.start, hit.end, hit.strand) == (2, 2 + len(G4), "-")
    assert hit.matched == G4


def test_g4_both_strands_and_rules() -> None:
    seq = G4 + "AAAAAAAAAA" + reverse_complement(G4)
    assert [(h.strand, h.start) for h in find_g_quadruplexes(seq)] == [("+", 0), ("-", 31)]
    assert find_g_quadruplexes("GGGTTAGGGTTAGGG") == []  # three runs only
    assert find_g_quadruplexes("GGAGGAGGAGG") == []  # runs of two
    assert find_g_quadruplexes("GGGAAAAAAAAGGGAGGGAGGG") == []  # an 8-nt loop
    assert len(find_g_quadruplexes("GGGAAAAAAAGGGAGGGAGGG")) == 1  # a 7-nt loop


# --------------------------------------------------------------------------- PWM maths


def naive_hits(scanner: MotifScanner, seq: str) -> set[tuple[str, int, str, float]]:
    """Score every window of every motif one by one: the reference the matrix product must match."""
    code = {"A": 0, "C": 1, "G": 2, "T": 3}
    out = set()
    for m in scanner.motifs:
        rc = m.weights[::-1, ::-1]
        for pos in range(len(seq) - m.length + 1):
            window = seq[pos : pos + m.length]
            if "N" in window:
                continue
            idx = [code[b] for b in window]
            for strand, w in (("+", m.weights), ("-", rc)):
                score = int(w[np.arange(m.length), idx].sum())
                if score >= m.threshold:
                    out.add((m.motif_id, pos, strand, score / 100))
    return out


def test_score_distribution_is_exact() -> None:
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 20, size=(5, 4))
    motif = prepare_motif(MotifMatrix("M1", "m", counts), pvalue=0.01)
    min_score, survival = score_distribution(motif.weights)
    scores = [int(motif.weights[np.arange(5), list(kmer)].sum())
              for kmer in itertools.product(range(4), repeat=5)]  # fmt: skip
    scores_arr = np.array(scores)
    assert min_score == scores_arr.min()
    for s in np.unique(scores_arr):
        assert survival[s - min_score] == pytest.approx((scores_arr >= s).mean(), rel=1e-9)
    # The threshold is the smallest score whose tail probability is within the p-value.
    assert (scores_arr >= motif.threshold).mean() <= 0.01
    assert (scores_arr >= motif.threshold - 1).mean() > 0.01 or motif.threshold == min_score


def test_log_odds_uses_pseudocounts() -> None:
    lo = log_odds(np.array([[16, 0, 0, 0]]))  # 16 sites: pseudo 1 per base
    assert lo[0, 0] == pytest.approx(np.log2((17 / 20) / 0.25))
    assert lo[0, 1] == pytest.approx(np.log2((1 / 20) / 0.25))


def test_unreachable_motifs_are_dropped() -> None:
    short = MotifMatrix("S1", "short", np.eye(4)[[0, 1, 2, 3]] * 100)  # a 4-mer: p >= 1/256
    scanner = MotifScanner.from_matrices([short], pvalue=1e-4)
    assert len(scanner) == 0 and scanner.unreachable == ["S1"]
    assert scanner.scan("ACGTACGT") == []


def test_vectorised_scan_matches_naive_scoring() -> None:
    rng = np.random.default_rng(7)
    matrices = [
        MotifMatrix(f"R{i}", f"r{i}", rng.gamma(0.3, size=(length, 4)) * 50)
        for i, length in enumerate([6, 9, 13, 18, 26])
    ]
    scanner = MotifScanner.from_matrices(matrices, pvalue=0.05)
    seqs = ["".join(rng.choice(list("ACGT"), size=n)) for n in (60, 5, 100, 33)]
    seqs.append(seqs[0][:20] + "N" + seqs[0][21:])  # an N blocks the windows across it
    seen = []
    for seq, hits in zip(seqs, scanner.scan_many(seqs, batch_size=2), strict=True):
        got = {(h.motif_id, h.start, h.strand, h.score) for h in hits}
        assert got == naive_hits(scanner, seq)
        for h in hits:
            assert h.end - h.start == len(h.matched)
            assert h.pvalue is not None and h.pvalue <= scanner.pvalue
        seen += hits
    assert len(seen) > 20 and {h.strand for h in seen} == {"+", "-"}
    assert {h.motif_id for h in seen} == {m.motif_id for m in matrices}


# --------------------------------------------------------------------------- JASPAR


@pytest.fixture(scope="module")
def jaspar() -> MotifScanner:
    # Skips only where the optional `motifs` extra is not installed; with pyjaspar present,
    # a scanner that cannot load its bundled JASPAR database is a failure, not a skip.
    pytest.importorskip("pyjaspar", reason="pyjaspar (the `motifs` extra) is not installed")
    return MotifScanner(collection="CORE", tax_group="vertebrates", pvalue=1e-4)


def test_jaspar_scanner_loads_vertebrate_core(jaspar: MotifScanner) -> None:
    assert len(jaspar) > 500
    assert jaspar.source.startswith("JASPAR") and "CORE vertebrates" in jaspar.source
    assert any(m.motif_id.startswith("MA0139") and m.name == "CTCF" for m in jaspar.motifs)


def test_jaspar_finds_planted_ctcf_on_both_strands(jaspar: MotifScanner) -> None:
    ctcf = next(m for m in jaspar.motifs if m.motif_id.startswith("MA0139"))
    best = "".join("ACGT"[i] for i in ctcf.weights.argmax(axis=1))  # the consensus site
    flank = "AT" * 20
    for strand, site in (("+", best), ("-", reverse_complement(best))):
        seq = flank + site + flank
        hits = [h for h in jaspar.scan(seq) if h.motif_id == ctcf.motif_id]
        match = [h for h in hits if h.strand == strand and h.start == len(flank)]
        assert match, f"CTCF consensus not found on {strand}: {hits}"
        hit = match[0]
        assert (hit.end, hit.name, hit.kind) == (len(flank) + ctcf.length, "CTCF", "jaspar_motif")
        assert hit.annotation_id == f"jaspar:{ctcf.motif_id}"
        assert hit.matched == best
        assert hit.score >= hit.threshold
        assert hit.pvalue < 1e-6


def test_jaspar_no_hits_in_unknown_bases(jaspar: MotifScanner) -> None:
    assert jaspar.scan("N" * 100) == []
    assert jaspar.scan("") == []
