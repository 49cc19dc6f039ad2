"""hsg correlate: coverage alignment on both strands, the vectorised scores, the CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from hsg.cli.correlate import correlate
from hsg.correlate import stats
from hsg.correlate.run import (
    CorrelateError,
    LayerScores,
    best_features,
    discover_saes,
    parse_layers,
)
from hsg.correlate.stats import CorrelationAccumulator, ncc, pearson
from hsg.correlate.tracks import load_tracks, region_token_coverage, token_coverage
from hsg.models.tokenizer import NucleotideTokenizer
from hsg.regions.records import InputError, SequenceRecord, reverse_complement

MOTIF = "ACGTAC"  # the token the planted detector feature fires on
DETECTOR = 3  # its index in the layer-0 SAE


# --------------------------------------------------------------------------- stats


@pytest.fixture
def unbuffered(monkeypatch):
    """Every update is added on its own, so multi-batch tests really span batches."""
    monkeypatch.setattr(stats, "BATCH_ELEMENTS", 1)


def _naive_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.full((x.shape[1], y.shape[1]), np.nan)
    for f in range(x.shape[1]):
        for k in range(y.shape[1]):
            if x[:, f].std() > 0 and y[:, k].std() > 0:
                out[f, k] = np.corrcoef(x[:, f], y[:, k])[0, 1]
    return out


@pytest.mark.parametrize("max_lag", [0, 2])  # the plain and the wide (all-lags) product
def test_vectorised_pearson_equals_a_naive_loop_across_uneven_batches(unbuffered, max_lag):
    rng = np.random.default_rng(0)
    x = rng.gamma(0.3, 2.0, size=(300, 9)) + 50.0  # large mean: tests the centred update
    x[:, 4] = 7.0  # a dead feature: constant, no correlation
    y = rng.random((300, 4))
    y[:, 1] = 0.0  # a track that covers nothing
    acc = CorrelationAccumulator(9, 4, max_lag=max_lag)
    for lo, hi in ((0, 17), (17, 18), (18, 200), (200, 300)):
        acc.update(torch.from_numpy(x[lo:hi]), torch.from_numpy(y[lo:hi]), [hi - lo])
    got = acc.pearson().numpy()
    want = _naive_pearson(x, y)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[4]).all() and np.isnan(got[:, 1]).all()
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], atol=1e-10)
    np.testing.assert_allclose(
        pearson(torch.from_numpy(x), torch.from_numpy(y)).numpy(), got, atol=1e-10
    )


def test_a_first_batch_far_from_the_run_mean_does_not_cancel_the_variance(unbuffered):
    # Feature 0 is off in the first batch, then 1000 ± 0.1, so the shift (0) sits 10^4
    # within-batch spreads from the later values. The run's own variance includes the
    # first batch, which bounds the cancellation (~ε·n/n_first): still float64-exact.
    rng = np.random.default_rng(5)
    x = np.zeros((400, 2))
    x[20:, 0] = 1000.0 + 0.1 * rng.standard_normal(380)
    x[:, 1] = rng.random(400)
    y = 0.02 * x[:, [0]] + rng.random((400, 1))
    y[20:] = np.where(rng.random((380, 1)) < 0.5, x[20:, [0]] - 1000.0, y[20:])
    acc = CorrelationAccumulator(2, 1)
    for lo, hi in ((0, 20), (20, 200), (200, 400)):
        acc.update(torch.from_numpy(x[lo:hi]), torch.from_numpy(y[lo:hi]), [hi - lo])
    np.testing.assert_allclose(acc.pearson().numpy(), _naive_pearson(x, y), atol=1e-10)


def test_float32_batches_stay_accurate_when_a_feature_switches_on_after_the_first(
    unbuffered,
):
    # The float32 batch sums would carry ~1e-7 of Σ (x - s)², which is huge while the shift
    # is the first batch's 0 (1.3e-6 off in r); re-shifting at batches 1, 2, 4, … keeps
    # it within 5e-7.
    rng = np.random.default_rng(5)
    n = 20000
    x = np.zeros((n, 2), dtype=np.float32)
    x[20:, 0] = 1000.0 + 0.1 * rng.standard_normal(n - 20)
    x[:, 1] = rng.random(n)
    y = (rng.random((n, 1)) < 0.1) * 1.0
    y[20:, 0] += 0.5 * (x[20:, 0] - 1000.0)
    bounds = [0, 20, *range(640, n, 640), n]
    got = {}
    for dtype in (torch.float64, torch.float32):
        acc = CorrelationAccumulator(2, 1, dtype=dtype)
        for lo, hi in itertools.pairwise(bounds):
            acc.update(torch.from_numpy(x[lo:hi]), torch.from_numpy(y[lo:hi]), [hi - lo])
        got[dtype] = acc.pearson().numpy()
    np.testing.assert_allclose(got[torch.float64], _naive_pearson(x.astype(float), y), atol=1e-8)
    np.testing.assert_allclose(got[torch.float32], got[torch.float64], atol=5e-7)


@pytest.mark.parametrize(
    ("track_product", "dtype", "atol"),
    [
        ("dense", torch.float64, 1e-10),
        ("sparse", torch.float64, 1e-10),
        ("sparse", torch.float32, 1e-5),
    ],
)
def test_every_lag_equals_a_naive_pearson_over_that_lags_pairs(
    monkeypatch, unbuffered, track_product, dtype, atol
):
    # Both track products on the same sparse, fractional coverage (the shape real BED tracks
    # take), forced by the density threshold: 0 always picks dense, 1 always sparse.
    monkeypatch.setattr(stats, "SPARSE_TRACKS", 1.0 if track_product == "sparse" else 0.0)
    rng = np.random.default_rng(3)
    lengths = [12, 5, 20, 1, 9, 14]
    x = rng.random((sum(lengths), 4)) * 3.0 + 10.0
    y = rng.random((sum(lengths), 3)) * (rng.random((sum(lengths), 3)) < 0.3)
    y[[0, 12, 17, 37], 2] = 1.0  # segment edges, where lags lose their partners
    acc = CorrelationAccumulator(4, 3, max_lag=3, dtype=dtype)
    mid = sum(lengths[:3])  # batches end on segment boundaries, as the encoder's batches do
    acc.update(torch.from_numpy(x[:mid]), torch.from_numpy(y[:mid]), lengths[:3])
    acc.update(torch.from_numpy(x[mid:]), torch.from_numpy(y[mid:]), lengths[3:])
    got = acc.per_lag().numpy()
    starts = np.cumsum([0] + lengths[:-1])
    for slot, lag in enumerate(acc.lags):
        pairs = [
            (s + t, s + t + lag)
            for s, n in zip(starts, lengths, strict=True)
            for t in range(n)
            if 0 <= t + lag < n
        ]
        i, j = np.array(pairs).T
        np.testing.assert_allclose(got[slot], _naive_pearson(x[i], y[j]), atol=atol)


def test_small_batches_are_gathered_and_give_the_same_scores(monkeypatch):
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.random((600, 5)))
    y = torch.from_numpy(rng.random((600, 2)) * (rng.random((600, 2)) < 0.2))
    results = []
    for budget in (1, 100 * 5):  # every batch on its own, then five batches at a time
        monkeypatch.setattr(stats, "BATCH_ELEMENTS", budget)
        acc = CorrelationAccumulator(5, 2, max_lag=2)
        for lo in range(0, 600, 20):
            x_part, y_part = x[lo : lo + 20].clone(), y[lo : lo + 20].clone()
            acc.update(x_part, y_part, [20])
            x_part.zero_()  # the caller reuses its tensors: gathered batches were copied
        assert acc.n_tokens == 600  # reading a result adds what is still gathered
        results.append(acc.per_lag().numpy())
    np.testing.assert_allclose(results[1], results[0], atol=1e-12)


def test_the_batch_dtype_must_be_a_float_the_sums_can_trust():
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        CorrelationAccumulator(4, 3, dtype=torch.float16)


def _shifted(x: np.ndarray, lengths: list[int], shift: int, rng) -> np.ndarray:
    """y[t] = x[t - shift] inside each segment, noise where t - shift leaves it."""
    y = rng.random(x.shape[0])
    start = 0
    for n in lengths:
        for t in range(n):
            if 0 <= t - shift < n:
                y[start + t] = x[start + t - shift]
        start += n
    return y


@pytest.mark.parametrize("shift", [2, -3, 0])
def test_ncc_finds_a_shifted_signal_at_the_right_lag(shift):
    rng = np.random.default_rng(1)
    lengths = [30, 25, 41]
    x = rng.random((sum(lengths), 3))
    y = _shifted(x[:, 1], lengths, shift, rng)[:, None]
    best, lag = ncc(torch.from_numpy(x), torch.from_numpy(y), lengths, max_lag=4)
    assert lag[1, 0].item() == shift
    assert best[1, 0].item() == pytest.approx(1.0, abs=1e-12)
    assert best[0, 0].item() < 0.9 and best[2, 0].item() < 0.9
    r = pearson(torch.from_numpy(x), torch.from_numpy(y))
    if shift:
        assert r[1, 0].item() < 0.5  # invisible without the lag search
    assert (best >= r - 1e-12).all()  # lag 0 is among the lags searched


def test_best_features_ranks_the_feature_equal_to_the_track_first():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.random((120, 16)))
    y = torch.stack([x[:, 11], torch.from_numpy(rng.random(120))], dim=1)
    best, lag = ncc(x, y, [60, 60], max_lag=1)
    scores = LayerScores(0, "sae", pearson(x, y), best, lag, 120, 16)
    rows = best_features(scores, ["copy", "noise"], top=3)
    first = rows[0]
    assert (first["track"], first["rank"], first["feature"]) == ("copy", 1, 11)
    assert first["pearson"] == pytest.approx(1.0) and first["lag"] == 0
    assert [r["rank"] for r in rows if r["track"] == "noise"] == [1, 2, 3]


# --------------------------------------------------------------------------- alignment


def _region(strand: str, length: int = 32) -> SequenceRecord:
    return SequenceRecord(
        id=f"chr1:100-{100 + length}({strand})",
        chrom="chr1",
        start=100,
        end=100 + length,
        strand=strand,
        sequence="ACGTTG" * (length // 6) + "A" * (length % 6),
    )


def test_coverage_lands_on_the_right_tokens_on_both_strands(tmp_path):
    bed = tmp_path / "t.bed"
    # "full": exactly genomic 106-112; "half": genomic 121-124 (3 bases);
    # "tail": genomic 100-101 (the first genomic base; the last sequence base on '-').
    bed.write_text("chr1\t106\t112\tfull\nchr1\t121\t124\thalf\nchr1\t100\t101\ttail\n")
    tracks = load_tracks(bed)
    cols = {"full": 0, "half": 1, "tail": 2}
    tok = NucleotideTokenizer("v2")
    plus, minus = _region("+"), _region("-")
    offs = tok.tokenize(plus.sequence)[1]
    assert offs[-2:] == [(30, 31), (31, 32)]  # 5 six-mers, then two one-base tail tokens

    cov = region_token_coverage(plus, offs, tracks, cols)
    assert cov.shape == (7, 3)
    assert cov[:, 0].tolist() == [0, 1, 0, 0, 0, 0, 0]  # sequence bases 6-12
    assert cov[:, 1].tolist() == [0, 0, 0, 0.5, 0, 0, 0]  # 21-24: half of token 18-24
    assert cov[:, 2].tolist() == pytest.approx([1 / 6, 0, 0, 0, 0, 0, 0])

    cov = region_token_coverage(minus, offs, tracks, cols)
    # '-': sequence base p is genomic 131 - p, so 106-112 -> 20-26, 121-124 -> 8-11
    assert cov[:, 0].tolist() == pytest.approx([0, 0, 0, 4 / 6, 2 / 6, 0, 0])
    assert cov[:, 1].tolist() == [0, 0.5, 0, 0, 0, 0, 0]
    assert cov[:, 2].tolist() == [0, 0, 0, 0, 0, 0, 1]  # the last sequence base

    # the same, derived independently: mark genomic bases, reverse for '-', average per token
    genomic = np.zeros(32)
    genomic[106 - 100 : 112 - 100] = 1
    per_base = genomic[::-1]
    want = [per_base[s:e].mean() for s, e in offs]
    np.testing.assert_allclose(cov[:, 0], want)


def test_token_coverage_counts_overlapping_intervals_once():
    base = np.zeros((12, 1), dtype=bool)
    base[2:8, 0] = True
    base[4:10, 0] = True
    cov = token_coverage(base, [(0, 6), (6, 12)])
    assert cov[:, 0].tolist() == pytest.approx([4 / 6, 4 / 6])


def test_region_length_must_match_coordinates(tmp_path):
    bed = tmp_path / "t.bed"
    bed.write_text("chr1\t0\t10\tx\n")
    bad = SequenceRecord("r", "chr1", 0, 10, "+", "ACGT")
    with pytest.raises(InputError, match="4 bp of sequence"):
        region_token_coverage(bad, [(0, 4)], load_tracks(bed), {"x": 0})


# --------------------------------------------------------------------------- CLI, end to end


def _break_accidental_sites(seq: list[str], planted: set[int]) -> None:
    """Mutate every MOTIF / reverse-complement occurrence that does not start at ``planted``."""
    protected = {i + k for i in planted for k in range(6)}
    changed = True
    while changed:
        changed = False
        text = "".join(seq)
        for bad in (MOTIF, reverse_complement(MOTIF)):
            i = text.find(bad)
            while i >= 0:
                if i not in planted:
                    j = next(j for j in range(i, i + 6) if j not in protected)
                    seq[j] = "A" if seq[j] != "A" else "T"
                    changed = True
                i = text.find(bad, i + 1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """6 regions (3 on each strand) with MOTIF planted as whole tokens, tracks, 2 SAEs."""
    from hsg.models.encoder import load_encoder
    from hsg.models.tiny import make_tiny
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    root = tmp_path_factory.mktemp("correlate")
    rng = np.random.default_rng(0)
    seq = list(rng.choice(list("ACGT"), size=1000))
    regions = [(50 + 150 * i, 50 + 150 * i + 60, "+-"[i % 2]) for i in range(6)]
    starts: set[int] = set()
    for start, end, strand in regions:
        for t in rng.choice(10, size=2, replace=False):
            if strand == "+":  # token t of the sequence is genome[start+6t : start+6t+6]
                at, text = start + 6 * t, MOTIF
            else:  # ... of the reverse complement: genome[end-6t-6 : end-6t] reversed
                at, text = end - 6 * t - 6, reverse_complement(MOTIF)
            seq[at : at + 6] = text
            starts.add(at)
    _break_accidental_sites(seq, starts)
    planted = len(starts)
    genome = "".join(seq)
    sites = []
    for text, strand in ((MOTIF, "+"), (reverse_complement(MOTIF), "-")):
        i = genome.find(text)
        while i >= 0:
            sites.append(f"chr1\t{i}\t{i + 6}\tmotif_site\t0\t{strand}")
            i = genome.find(text, i + 1)
    assert len(sites) == planted  # no accidental sites, none destroyed

    lines = ["id\tchrom\tstart\tend\tstrand\tsequence"]
    for start, end, strand in regions:
        s = genome[start:end] if strand == "+" else reverse_complement(genome[start:end])
        lines.append(f"chr1:{start}-{end}({strand})\tchr1\t{start}\t{end}\t{strand}\t{s}")
    (root / "regions.tsv").write_text("\n".join(lines) + "\n")
    other = [
        "chr1\t60\t95\tLINE_L1\t0\t+",
        "chr1\t360\t380\tLINE_L1\t0\t-",
        "chr1\t215\t233\tprotein_bind:_CTCF\t0\t+",
        "chr9\t0\t500\tenhancer\t0\t+",  # a chromosome with no region
    ]
    (root / "tracks.bed").write_text("\n".join(sites + other) + "\n")

    model = make_tiny(root / "model", "v2", layers=2, hidden=32, seed=0)
    enc = load_encoder(model, device="cpu")
    # layer 0 of a rotary (v2) model is the token embedding alone: one vector per token
    h_motif = enc.embed([MOTIF], 0).content(0)[0]
    all_tokens = enc.embed([ln.split("\t")[5] for ln in lines[1:]], 0)
    u = h_motif / h_motif.norm()
    proj = all_tokens.hidden[all_tokens.content_mask] @ u
    others = proj[proj < h_motif.norm() - 1e-4]
    assert len(others) == len(proj) - planted and others.max() < 0.9 * h_motif.norm()
    threshold = float((h_motif.norm() + others.max()) / 2)
    sae0 = SparseAutoencoder(SAEConfig(d_in=32, d_sae=8, layer=0, model_id="model", seed=1))
    with torch.no_grad():
        sae0.W_enc[:, DETECTOR] = u
        sae0.b_enc[DETECTOR] = -threshold
    sae0.save(root / "saes" / "a")
    SparseAutoencoder(SAEConfig(d_in=32, d_sae=8, layer=1, model_id="model", seed=2)).save(
        root / "saes" / "b"
    )
    return root


def _invoke(world: Path, *extra: str, out: str = "out"):
    args = [
        "--regions", str(world / "regions.tsv"),
        "--tracks", str(world / "tracks.bed"),
        "--model", str(world / "model"),
        "--sae-dir", str(world / "saes"),
        "--out", str(world / out),
        "--device", "cpu",
        *extra,
    ]  # fmt: skip
    return CliRunner().invoke(correlate, args)


def test_cli_ranks_the_planted_detector_first_with_correlation_one(world):
    res = _invoke(
        world,
        "--layers",
        "0-1",
        "--max-lag",
        "2",
        "--top",
        "3",
        "--subset",
        "LINE=^LINE",
        "--subset",
        "binding=protein_bind",
    )
    assert res.exit_code == 0, res.output
    assert "chr9" in res.output  # warned: track chromosome without regions
    out = world / "out"
    best = pd.read_csv(out / "best_features.tsv", sep="\t")
    top = best[(best.layer == 0) & (best.track == "motif_site") & (best["rank"] == 1)].iloc[0]
    assert top.feature == DETECTOR
    assert top.pearson == pytest.approx(1.0, abs=1e-9)  # exact on both strands
    assert top.ncc == pytest.approx(1.0, abs=1e-9) and top.lag == 0
    assert set(best.track) == {"motif_site", "LINE_L1", "protein_bind:_CTCF"}
    assert set(best.layer) == {0, 1} and best["rank"].max() == 3
    assert (best.ncc >= best.pearson - 1e-12).all()
    assert (out / "best_features.parquet").is_file()
    assert (out / "best_scores_by_layer.png").stat().st_size > 1000
    summary = json.loads((out / "layer_summary.json").read_text())
    assert {(r["layer"], r["subset"]) for r in summary["layers"]} == {
        (layer, s) for layer in (0, 1) for s in ("all", "LINE", "binding")
    }
    assert summary["subsets"]["LINE"]["tracks"] == ["LINE_L1"]
    assert summary["absent_chromosomes"] == ["chr9"]
    tsv = pd.read_csv(out / "layer_summary.tsv", sep="\t")
    assert len(tsv) == 6


def test_cli_float32_precision_gives_the_float64_scores_to_1e_5(world):
    for precision in ("float64", "float32"):
        args = ("--layers", "0-1", "--max-lag", "2", "--top", "5", "--no-plot")
        res = _invoke(world, *args, "--precision", precision, out=f"out_{precision}")
        assert res.exit_code == 0, res.output
    exact, fast = (
        pd.read_csv(world / f"out_{p}" / "best_features.tsv", sep="\t")
        for p in ("float64", "float32")
    )
    top = fast[(fast.layer == 0) & (fast.track == "motif_site") & (fast["rank"] == 1)].iloc[0]
    assert top.feature == DETECTOR and top.pearson == pytest.approx(1.0, abs=1e-5)
    # near-ties may swap places, so compare each (layer, track, feature) found by both
    key = ["layer", "track", "feature"]
    both = exact.merge(fast, on=key, suffixes=("_64", "_32"))
    assert len(both) >= 0.8 * len(exact)
    np.testing.assert_allclose(both.pearson_32, both.pearson_64, atol=1e-5)
    np.testing.assert_allclose(both.ncc_32, both.ncc_64, atol=1e-5)
    meta = json.loads((world / "out_float32" / "layer_summary.json").read_text())
    assert meta["config"]["precision"] == "float32"


def test_cli_missing_sae_for_a_layer_names_layer_and_directory(world):
    res = _invoke(world, "--layers", "0-2", out="out_missing")
    assert res.exit_code == 1
    assert "layer(s) 2" in res.output and str(world / "saes") in res.output


def test_cli_rejects_empty_and_unplaceable_track_files(world, tmp_path):
    empty = tmp_path / "empty.bed"
    empty.write_text("# nothing\n")
    res = _invoke(world, "--tracks", str(empty), out="out_empty")
    assert res.exit_code == 1 and "contains no intervals" in res.output

    elsewhere = tmp_path / "elsewhere.bed"
    elsewhere.write_text("chr2\t0\t100\tenhancer\nchrX\t5\t50\tpromoter\n")
    res = _invoke(world, "--tracks", str(elsewhere), out="out_elsewhere")
    assert res.exit_code == 1
    assert "chr2, chrX" in res.output and "overlaps any of the 6 regions" in res.output

    res = _invoke(world, "--subset", "oops", out="out_bad_subset")
    assert res.exit_code == 1 and "NAME=regex" in res.output


def test_sae_discovery_by_cfg_layer_or_directory_name(tmp_path):
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    SparseAutoencoder(SAEConfig(d_in=4, d_sae=2, layer=None)).save(tmp_path / "layer_7")
    SparseAutoencoder(SAEConfig(d_in=4, d_sae=2, layer=3)).save(tmp_path / "x")
    assert discover_saes(tmp_path) == {3: tmp_path / "x", 7: tmp_path / "layer_7"}
    SparseAutoencoder(SAEConfig(d_in=4, d_sae=2, layer=3)).save(tmp_path / "y")
    with pytest.raises(CorrelateError, match="two SAEs for layer 3"):
        discover_saes(tmp_path)


def test_parse_layers():
    assert parse_layers("0-3,12, 2") == [0, 1, 2, 3, 12]
    with pytest.raises(CorrelateError):
        parse_layers("3-1")
