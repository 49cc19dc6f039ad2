"""Steering results in the atlas, from a real `api.steer` run on a tiny model, SAE and
classifier: a target's card carries the file's numbers, other cards do not, the index sorts
by the largest shift, and results of another SAE (or of no recorded SAE) are refused before
anything is written."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from hsg import api
from hsg.atlas.build import render_atlas
from hsg.atlas.steering import SteeringResultsError, read_all, read_steering
from hsg.regions.synthetic import make_synthetic_dataset, write_tsv
from hsg.sae.config import SAEConfig
from hsg.sae.model import SparseAutoencoder

CHROMIUM = (
    os.environ.get("HSG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)
POSITIVE = "motif_positive"
STEERED = (3, 10)  # 10 has no result in the graph rows below: it still gets a card
UNRELATED = 5


def _sae(encoder, seed: int) -> SparseAutoencoder:
    return SparseAutoencoder(
        SAEConfig(
            d_in=encoder.hidden_size,
            d_sae=16,
            layer=1,
            model_id=encoder.model_id,
            encoder_checkpoint_hash=encoder.checkpoint_hash,
            seed=seed,
        )
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("atlas_steer")
    model = api.make_tiny_model(root / "model", "v2")
    encoder = api.load_encoder(model, device="cpu")
    sae = _sae(encoder, 0)
    sae.save(root / "sae")
    other = _sae(encoder, 1)
    assert other.sae_id != sae.sae_id
    data = write_tsv(make_synthetic_dataset(n=60, length=40, seed=0), root / "data.tsv")
    clf = root / "clf"
    api.train_classifier(data, encoder, positive=POSITIVE, out=clf, layer=1, epochs=2)
    targets = root / "targets.json"
    targets.write_text(
        json.dumps(
            {
                "sae": {"id": sae.sae_id},
                "targets": [{"feature": f"{sae.sae_id}/{i}", "index": i} for i in STEERED],
            }
        )
    )
    report = api.steer(
        targets,
        clf,
        sae,
        encoder,
        data,
        out=root / "steer",
        min_acts=(0.0,),
        alphas=(0.0, 4.0),
        plots=False,
        device="cpu",
    )
    return {"root": root, "sae": sae, "other": other, "out": root / "steer", "report": report}


def _rows(sae_id: str) -> list[dict]:
    return [
        {
            "feature": f"{sae_id}/{i}",
            "index": i,
            "consensus": None,
            "pwm": None,
            "central": [{"label": "binding", "pagerank": 0.1 * (i + 1), "support": 2}],
            "detects": [],
            "resembles": [],
        }
        for i in (STEERED[0], UNRELATED)
    ]


def _cells(html: str, cls: str) -> list[list[str]]:
    """data-v of every cell of every ``<tr class=cls>``."""
    rows = re.findall(rf"<tr class='{cls}'>(.*?)</tr>", html)
    return [re.findall(r"data-v='([^']*)'", r) for r in rows]


def test_cards_carry_the_files_numbers(run, tmp_path):
    sae_id = run["sae"].sae_id
    steering = read_all([run["out"], run["out"] / "metrics.json"])  # the same run, read once
    assert len(steering) == 1
    summary = render_atlas(sae_id, _rows(sae_id), {}, tmp_path, steering=steering)
    assert summary.features == 3
    doc = json.loads((run["out"] / "metrics.json").read_text())
    for index in STEERED:
        card = (tmp_path / "features" / f"{index}.html").read_text()
        assert "<h2>Steering</h2>" in card
        mine = [c for c in doc["conditions"] if c["index"] == index]
        assert len(mine) == 3  # ablate, δ=0 α=0, δ=0 α=4
        cells = _cells(card, "condition")
        assert len(cells) == len(mine)
        for row, c in zip(cells, mine, strict=True):
            # δ, α, Δ mean P, mean P, AUROC, Δ AUROC, flipped, mean |ΔP|: exactly the file's
            keys = ("min_act", "alpha", "delta_mean_prob", "mean_prob", "auroc", "delta_auroc",
                    "flipped", "mean_abs_delta_prob")  # fmt: skip
            for key, v in zip(keys, row, strict=True):
                if c[key] is None:
                    assert v in ("", "-1e300"), key
                else:
                    assert float(v) == c[key], key
            assert f">{c['delta_mean_prob']:+.4f}<" in card
        assert c["label"] in card and c["kind"] in card
        # the file, the classifier and the model are named without local paths (atlases are
        # shared)
        assert "<dd>steer/metrics.json</dd>" in card
        assert str(run["root"]) not in card and str(run["root"].parent) not in card
        prov = doc["provenance"]
        for text in (prov["sae_id"], Path(prov["model_id"]).name, Path(prov["classifier"]).name,
                     prov["model_checkpoint_hash"][:12], prov["positive_label"]):  # fmt: skip
            assert text in card
    unrelated = (tmp_path / "features" / f"{UNRELATED}.html").read_text()
    assert "Steering" not in unrelated and "condition" not in unrelated
    index = (tmp_path / "index.html").read_text()
    assert "steering: largest |Δ mean P|" in index
    # the column's sort key is |shift| of the strongest condition; unsteered features sort last
    keys = dict(re.findall(r"href='features/(\d+)\.html'.*?class='num steer' data-v='([^']*)'",
                           index))  # fmt: skip
    for i in STEERED:
        best = max((c["delta_mean_prob"] for c in doc["conditions"] if c["index"] == i), key=abs)
        assert float(keys[str(i)]) == abs(best)
    assert keys[str(UNRELATED)] == "-1e300"
    # "steered" in the search box keeps exactly the targets
    searchable = re.findall(r"<tr data-search='([^']*)'>", index)
    assert sum("steered" in s for s in searchable) == len(STEERED)


def test_no_steering_no_column(run, tmp_path):
    sae_id = run["sae"].sae_id
    render_atlas(sae_id, _rows(sae_id), {}, tmp_path)
    assert "steering" not in (tmp_path / "index.html").read_text()
    assert not (tmp_path / "features" / f"{STEERED[1]}.html").exists()


def test_results_of_another_sae_are_refused(run, tmp_path):
    other = run["other"].sae_id
    steering = read_all([run["out"]])
    out = tmp_path / "atlas"
    with pytest.raises(SteeringResultsError, match="mean nothing in another"):
        render_atlas(other, _rows(other), {}, out, steering=steering)
    assert not out.exists()


def test_results_without_identity_or_not_results(run, tmp_path):
    doc = json.loads((run["out"] / "metrics.json").read_text())
    del doc["provenance"]["sae_id"]
    anonymous = tmp_path / "anonymous.json"
    anonymous.write_text(json.dumps(doc))
    with pytest.raises(SteeringResultsError, match="record no SAE identity"):
        read_steering(anonymous)
    with pytest.raises(SteeringResultsError, match="not a steering results file"):
        read_steering(run["root"] / "targets.json")
    with pytest.raises(SteeringResultsError, match="not a steering results file"):
        read_steering(run["root"] / "clf")  # the classifier's metrics.json
    with pytest.raises(SteeringResultsError, match="no metrics.json"):
        read_steering(tmp_path)
    # the CLI: a usage error (exit 2) before any connection, and no atlas folder
    from hsg.cli import cli

    out = tmp_path / "atlas"
    res = CliRunner().invoke(cli, ["atlas", "--steering", str(anonymous), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "record no SAE identity" in res.output and not out.exists()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_steering_column_sorts_in_chromium(run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    sae_id = run["sae"].sae_id
    render_atlas(sae_id, _rows(sae_id), {}, tmp_path, steering=read_all([run["out"]]))
    doc = json.loads((run["out"] / "metrics.json").read_text())
    shift = {
        i: max(abs(c["delta_mean_prob"]) for c in doc["conditions"] if c["index"] == i)
        for i in STEERED
    }
    assert shift[STEERED[0]] != shift[STEERED[1]]  # else the order would test nothing
    expected = [f"{sae_id}/{i}" for i in sorted(STEERED, key=lambda i: -shift[i])]
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((tmp_path / "index.html").as_uri())
            page.locator("#features th", has_text="steering").click()  # descending
            rows = page.locator("#features tbody tr")
            first = [rows.nth(r).locator("td").first.inner_text() for r in range(3)]
            assert first == expected + [f"{sae_id}/{UNRELATED}"]
        finally:
            browser.close()
    assert errors == []
