"""Quality with the defaults alone: `hsg sae train` finds a planted dictionary.

The data (`hsg.sae.planted`): 128 random unit atoms in d_in = 64 (2x overcomplete), every
row a non-negative combination of 3-5 of them (coefficients uniform in [0.5, 1.5]) on top
of a common offset of norm 2, plus noise of std 0.01, all scaled by 7 (so nothing can rely
on unit-scale data). Each test runs the real CLI with nothing but the data, the output,
the architecture, the dictionary size (2x the atoms) and k where the architecture needs
it — every other setting is `hsg.api.TRAIN_DEFAULTS` — and asserts that at least 90 % of
the atoms have a decoder row at cosine >= 0.9 and that the validation FVE is >= 0.9.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hsg.cli import cli
from hsg.sae.model import SparseAutoencoder
from hsg.sae.planted import planted_dictionary, recovered_fraction

N_ROWS = int(os.environ.get("HSG_PLANTED_ROWS", 60_000))
D_IN, N_ATOMS, D_SAE, K = 64, 128, 256, 5


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    data = planted_dictionary(N_ROWS, d_in=D_IN, n_atoms=N_ATOMS, scale=7.0, seed=13)
    path = tmp_path_factory.mktemp("planted") / "acts.npy"
    np.save(path, data.x)
    return path, data.atoms


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["topk", "batchtopk", "relu", "jumprelu"])
def test_cli_defaults_recover_a_planted_dictionary(planted, arch, tmp_path, one_thread):
    path, atoms = planted
    out = tmp_path / arch
    args = ["sae", "train", "--activations", str(path), "--out", str(out), "--arch", arch,
            "--d-sae", str(D_SAE)]  # fmt: skip
    if arch in ("topk", "batchtopk"):
        args += ["--k", str(K)]
    t0 = time.perf_counter()
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    seconds = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{\n") :])
    sae = SparseAutoencoder.load(out)
    frac = recovered_fraction(sae.W_dec.detach().numpy(), atoms)
    val = json.loads(
        CliRunner()
        .invoke(
            cli,
            [
                "sae",
                "eval",
                "--sae",
                str(out),
                "--activations",
                str(path),
                "--split",
                "val",
                "--device",
                "cpu",
            ],
        )
        .output  # fmt: skip
    )
    print(
        f"{arch}: recovered {frac:.3f}, val fve {val['fve']:.4f}, L0 {val['l0']:.2f}, "
        f"dead {val['dead_latents']}, dense {val['dense_latents']}, epochs "
        f"{summary['epochs_run']} (best {summary['best_epoch']}, stopped early "
        f"{summary['stopped_early']}), {seconds:.1f} s"
    )
    assert torch.get_num_threads() == 1
    assert frac >= 0.9
    assert val["fve"] >= 0.9
