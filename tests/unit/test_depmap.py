"""Dependency maps: mutant construction, locality, batching, the spectral score, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hsg.cli.steer import depmap
from hsg.models.encoder import load_encoder
from hsg.models.tiny import make_tiny
from hsg.regions.synthetic import make_synthetic_dataset, write_tsv
from hsg.sae.config import SAEConfig
from hsg.sae.model import SparseAutoencoder
from hsg.steer.depmap import dependency_map, leading_eigenvector, mutant_rows

FEATURE = 5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("depmap")
    model = make_tiny(root / "model", "v2", layers=2, hidden=32, seed=0)
    encoder = load_encoder(model)
    saes = {}
    for layer in (0, 2):
        sae = SparseAutoencoder(SAEConfig(d_in=32, d_sae=48, layer=layer, seed=layer))
        with torch.no_grad():
            sae.b_enc[FEATURE] = 20.0  # always active: z_j is linear in the hidden state
        sae.save(root / f"sae{layer}")
        saes[layer] = sae
    records = make_synthetic_dataset(n=4, length=40, seed=1)
    data = write_tsv(records, root / "data.tsv")
    return {
        "root": root,
        "model": model,
        "encoder": encoder,
        "sae": saes,
        "records": records,
        "data": data,
    }


def test_mutants_are_the_retokenized_sequences(world) -> None:
    enc = world["encoder"]
    seq = "ACGTACGTTGCANNACGTAGGCTTAC"  # 6-mers, a tail, N tokens, then 6-mers again
    ref, rows, which = mutant_rows(enc, seq)
    assert len(rows) == 3 * (len(seq) - 2)  # the two Ns are not mutated
    for row, (p, alt) in zip(rows, which, strict=True):
        mutant = seq[:p] + alt + seq[p + 1 :]
        again = enc.tokenizer.encode(mutant)
        assert row.ids == again.ids and row.offsets == again.offsets == ref.offsets


def test_layer0_map_is_local(world) -> None:
    seq = world["records"][0].sequence
    dm = dependency_map(world["encoder"], world["sae"][0], FEATURE, seq)
    n, t = len(seq), len(dm.tokens)
    assert dm.delta.shape == (n, 3, t) and dm.layer == 0
    own = np.zeros_like(dm.delta, dtype=bool)
    own[np.arange(n), :, dm.token_of_base] = True
    # at the embedding layer a substitution changes its own token's vector and nothing else
    assert np.abs(dm.delta[~own]).max() < 1e-5
    assert np.abs(dm.delta[own]).mean() > 1e-2
    m = dm.base_matrix()
    assert m.shape == (n, n)
    same_token = dm.token_of_base[:, None] == dm.token_of_base[None, :]
    assert m[~same_token].max() < 1e-5 and m[same_token].max() > 1e-2


def test_deeper_layer_is_not_local_and_batching_is_exact(world) -> None:
    seq = world["records"][1].sequence
    batched = dependency_map(world["encoder"], world["sae"][2], FEATURE, seq, batch_size=64)
    single = dependency_map(world["encoder"], world["sae"][2], FEATURE, seq, batch_size=1)
    np.testing.assert_allclose(batched.delta, single.delta, atol=1e-5)
    own = np.zeros_like(batched.delta, dtype=bool)
    own[np.arange(len(seq)), :, batched.token_of_base] = True
    assert np.abs(batched.delta[~own]).max() > 1e-3  # attention spreads the change


def test_leading_eigenvector() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((30, 30))
    a = (a + a.T) / 2
    values, vectors = np.linalg.eigh(a)
    expected = np.abs(vectors[:, -1]) / np.abs(vectors[:, -1]).max()
    np.testing.assert_allclose(leading_eigenvector(a), expected, atol=1e-6)
    block = np.zeros((6, 6))
    block[:3, :3] = 2.0
    block[3:, 3:] = 0.5
    v = leading_eigenvector(block)
    assert v[:3].min() > 0.99 and v[3:].max() < 1e-6  # the strongly coupled block wins
    assert not leading_eigenvector(np.zeros((4, 4))).any()


def test_cli_outputs(world) -> None:
    rec = world["records"][2]
    out = world["root"] / "dm"
    args = [
        "--model",
        str(world["model"]),
        "--sae",
        str(world["root"] / "sae2"),
        "--feature",
        str(FEATURE),
        "--data",
        str(world["data"]),
        "--id",
        rec.id,
        "--out",
        str(out),
    ]
    res = CliRunner().invoke(depmap, args)
    assert res.exit_code == 0, res.output
    for name in (
        "depmap.tsv",
        "mutations.tsv",
        "sensitivity.tsv",
        "delta.npy",
        "depmap.json",
        "depmap.png",
    ):
        assert (out / name).is_file(), name
    n = len(rec.sequence)
    matrix = np.loadtxt(out / "depmap.tsv", skiprows=1)
    assert matrix.shape == (n, n + 1)
    assert len((out / "mutations.tsv").read_text().splitlines()) == 1 + 3 * n
    doc = json.loads((out / "depmap.json").read_text())
    assert doc["layer"] == 2 and doc["n_mutants"] == 3 * n and doc["name"] == rec.id


def test_cli_bad_input(world) -> None:
    base = [
        "--model",
        str(world["model"]),
        "--sae",
        str(world["root"] / "sae0"),
        "--out",
        str(world["root"] / "bad"),
    ]
    res = CliRunner().invoke(depmap, [*base, "--feature", "5"])
    assert res.exit_code == 2 and "--sequence" in res.output
    res = CliRunner().invoke(depmap, [*base, "--feature", "99", "--sequence", "ACGTACGT"])
    assert res.exit_code == 1 and "outside 0..47" in res.output
    res = CliRunner().invoke(depmap, [*base, "--feature", "1", "--sequence", "ACGTXX"])
    assert res.exit_code == 1 and "invalid character" in res.output
    res = CliRunner().invoke(
        depmap, [*base, "--feature", "1", "--layer", "1", "--sequence", "ACGT"]
    )
    assert res.exit_code == 1 and "trained on layer 0, not layer 1" in res.output
