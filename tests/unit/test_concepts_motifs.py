"""Motifs: a feature that fires on a planted JASPAR motif gives a PWM whose best Tomtom hit in
JASPAR CORE is that motif's own matrix; seqlets are de-duplicated and padded with N."""

from __future__ import annotations

import numpy as np
import pytest

from hsg.concepts.data import Concept, activations_from_rows, concept_labels, token_index
from hsg.concepts.f1 import concept_f1
from hsg.concepts.motifs import MotifConfig, seqlets
from hsg.concepts.run import Inputs, resembles_rows, run_motifs

PLANTED = "MA0080"  # Spi1 in JASPAR CORE vertebrates (any version bundled with pyjaspar)
COMPLEMENT = str.maketrans("ACGT", "TGCA")


def planted_inputs(freq: np.ndarray, n: int = 200, seed: int = 0) -> Inputs:
    """Half the sequences carry an instance sampled from `freq` (either strand); feature 0
    fires on exactly the tokens overlapping it, features 1-5 fire at random."""
    rng = np.random.default_rng(seed)
    concept = Concept("planted", "planted", "test")
    ids, seqs, intervals = [], [], {}
    for i in range(n):
        s = list(rng.choice(list("ACGT"), 100))
        items = []
        if i % 2 == 0:
            inst = "".join("ACGT"[rng.choice(4, p=row / row.sum())] for row in freq)
            if rng.random() < 0.5:
                inst = inst[::-1].translate(COMPLEMENT)
            a = int(rng.integers(0, 100 - len(inst)))
            s[a : a + len(inst)] = inst
            items.append((concept, a, a + len(inst)))
        ids.append(f"r{i}")
        seqs.append("".join(s))
        intervals[i] = items
    index = token_index(ids, seqs)
    labels = concept_labels(index, intervals)
    rows = []
    for i in range(n):
        for r in range(index.row_start[i], index.row_start[i + 1]):
            pos = int(r - index.row_start[i])
            if labels.matrix[r, 0]:
                a, b = intervals[i][0][1:]
                t0, t1 = index.spans[r]
                rows.append((i, pos, 0, 1.0 + min(b, t1) - max(a, t0)))
            for f in range(1, 6):
                if rng.random() < 0.1:
                    rows.append((i, pos, f, float(rng.gamma(2.0))))
    acts = activations_from_rows(index, rows, [f"sae/{f}" for f in range(6)])
    return Inputs(acts, intervals=intervals, sae="sae")


@pytest.fixture(scope="module")
def database():
    pytest.importorskip("pyjaspar")
    pytest.importorskip("memelite")
    from hsg.concepts.motifs import jaspar_database

    return jaspar_database(MotifConfig())


@pytest.mark.slow  # Tomtom is compiled by numba on first use in an environment (then cached)
def test_planted_motif_is_the_best_jaspar_hit(database, tmp_path):
    j = next(i for i, m in enumerate(database.ids) if m.startswith(PLANTED + "."))
    inputs = planted_inputs(database.frequencies[j])
    result = concept_f1(inputs.activations, inputs.labels())
    assert result.best_per_concept(1).iloc[0]["feature"] == "sae/0"
    assert result.best_per_concept(1).iloc[0]["f1"] == pytest.approx(1.0)

    run = run_motifs(inputs, [0, 1], MotifConfig(), database=database, out=tmp_path)
    planted, noise = run.motifs
    assert planted.best is not None
    assert planted.best.motif_id == database.ids[j]
    assert planted.best.qvalue < 1e-6
    assert (tmp_path / "logos" / "sae_0.png").stat().st_size > 1000
    assert (tmp_path / "motifs.tsv").is_file()
    # random firing has no motif worth a RESEMBLES
    motif_rows, rows = resembles_rows(run, max_qvalue=0.05)
    assert {r["feature"] for r in rows} == {"sae/0"}
    assert rows[0]["annotation_id"] == f"jaspar:{database.ids[j]}"
    assert [m["feature"] for m in motif_rows] == ["sae/0", "sae/1"]
    assert noise.best is None or noise.best.qvalue > 1e-6


def test_seqlets_are_deduplicated_and_padded():
    index = token_index(["a"], ["ACGTACGGGGGGTTTTTT"])
    acts = activations_from_rows(index, [(0, 0, 0, 3.0), (0, 1, 0, 2.0), (0, 2, 0, 1.0)], ["f"])
    found = seqlets(acts, 0, MotifConfig(flank=4, seqlets=10))
    # windows are 14 bp; token 1's window overlaps token 0's by 8 bp (> half): skipped
    assert [s.token for s in found] == [(0, 6), (12, 18)]
    assert found[0].text == "NNNNNACGTACGGGGG"[1:15]
    assert found[0].activation == 3.0


def test_motif_config_round_trips():
    config = MotifConfig(seqlets=7, release="JASPAR2024")
    assert MotifConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError):
        MotifConfig(min_coverage=0)
