"""The atlas: written from graph-shaped rows, escaped, and rendered by headless Chromium with
no console error, a screenshot, and a search box that filters the index."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from hsg.atlas.build import render_atlas

CHROMIUM = (
    os.environ.get("HSG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)
ARTIFACTS = Path(os.environ.get("HSG_TEST_ARTIFACTS", "test-artifacts"))
SAE = "tiny/L1/topk-6-abc"


def _rows():
    pwm = np.full((6, 4), 0.05)
    pwm[np.arange(6), [0, 1, 2, 3, 2, 2]] = 0.85
    features = []
    for i in range(4):
        features.append(
            {
                "feature": f"{SAE}/{i}",
                "index": i,
                "consensus": "ACGTGG" if i == 0 else None,
                "pwm": json.dumps(pwm.tolist()) if i == 0 else None,
                "central": [
                    {"label": "binding", "pagerank": 0.1 * (i + 1), "support": 3},
                    {"label": "non_binding", "pagerank": 0.05, "support": 2},
                ],
                "detects": [
                    {
                        "concept": "enhancer" if i % 2 else "CTCF",
                        "annotation": f"a{i}",
                        "f1": 0.5 + 0.1 * i,
                        "precision": 0.9,
                        "recall": 0.5,
                        "threshold": 0.2,
                        "support": 12,
                    }  # fmt: skip
                ],
                "resembles": (
                    [
                        {
                            "motif": "jaspar:MA0139.2",
                            "name": "CTCF",
                            "pvalue": 1e-9,
                            "qvalue": 1e-6,
                            "orientation": "+",
                        }
                    ]  # fmt: skip
                    if i == 0
                    else [
                        {
                            "motif": None,
                            "name": None,
                            "pvalue": None,
                            "qvalue": None,
                            "orientation": None,
                        }
                    ]  # fmt: skip
                ),
            }
        )
    # a name with markup must come out as text
    features[3]["detects"][0]["concept"] = "<script>alert(1)</script>"
    tops = {
        f"{SAE}/0": [
            {
                "feature": f"{SAE}/0",
                "id": "s1",
                "sequence": "AAAAAACCCCCCGG",
                "position": 1,
                "activation": 2.5,
            }
        ]  # fmt: skip
    }
    return features, tops


def test_atlas_files_and_escaping(tmp_path):
    features, tops = _rows()
    summary = render_atlas(SAE, features, tops, tmp_path)
    assert summary.features == 4 and summary.logos == 1
    index = (tmp_path / "index.html").read_text()
    assert "<script>alert(1)</script>" not in index
    assert "&lt;script&gt;" in index
    assert "log2 FC binding/non_binding" in index
    card = (tmp_path / "features" / "0.html").read_text()
    assert "AAAAAA<mark>CCCCCC</mark>GG" in card
    assert "MATCH (f:Feature {id: $feature})" in card
    assert (tmp_path / "logos" / "0.png").stat().st_size > 500


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_atlas_renders_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    features, tops = _rows()
    render_atlas(SAE, features, tops, tmp_path)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "atlas-index.png"
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((tmp_path / "index.html").as_uri())
            rows = page.locator("#features tbody tr")
            assert rows.count() == 4
            assert page.locator("#count").inner_text() == "4 of 4 features"
            page.locator("#search").fill("ctcf")
            assert page.locator("#count").inner_text() == "2 of 4 features"
            visible = [r for r in range(4) if rows.nth(r).is_visible()]
            assert [rows.nth(r).locator("td").first.inner_text() for r in visible] == [
                f"{SAE}/0",
                f"{SAE}/2",
            ]
            page.locator("#search").fill("")
            page.locator("#features th").nth(1).click()  # PageRank binding, descending
            assert rows.first.locator("td").first.inner_text() == f"{SAE}/3"
            page.screenshot(path=str(shot))
            page.goto((tmp_path / "features" / "0.html").as_uri())
            assert page.locator("img").evaluate("i => i.naturalWidth") > 0
            assert page.locator("mark").first.inner_text() == "CCCCCC"
        finally:
            browser.close()
    assert errors == []
    assert shot.stat().st_size > 5_000
