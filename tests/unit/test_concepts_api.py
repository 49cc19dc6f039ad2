"""`api.concepts` on a fresh encoding (tiny random NT + SAE, no database): the regions'
BED concepts are scored, files are written, nothing is printed; bad options fail clearly."""

from __future__ import annotations

import numpy as np
import pytest

from hsg import api
from hsg.concepts.run import ConceptError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    root = tmp_path_factory.mktemp("concepts")
    model = api.make_tiny_model(root / "model", "v2")
    enc = api.load_encoder(model, device="cpu")
    cfg = SAEConfig(d_in=enc.hidden_size, d_sae=16, layer=1, model_id=enc.model_id,
                    encoder_checkpoint_hash=enc.checkpoint_hash)  # fmt: skip
    sae = SparseAutoencoder(cfg).save(root / "sae")
    rng = np.random.default_rng(3)
    lines = ["id\tchrom\tstart\tend\tstrand\tsequence\tlabel"]
    bed = []
    for i in range(40):
        seq = "".join(rng.choice(list("ACGT"), 60))
        start = 1000 * i
        lines.append(f"r{i}\tchr1\t{start}\t{start + 60}\t{'+-'[i % 2]}\t{seq}\t{i % 2}")
        bed.append(f"chr1\t{start + 10}\t{start + 25}\tenhancer")
        if i % 3 == 0:
            bed.append(f"chr1\t{start + 40}\t{start + 44}\tpromoter")
    (root / "regions.tsv").write_text("\n".join(lines) + "\n")
    (root / "elements.bed").write_text("\n".join(bed) + "\n")
    return root, model, sae


def test_fresh_encoding_scores_bed_concepts(tiny, tmp_path, capsys):
    root, model, sae = tiny
    run = api.concepts(regions=root / "regions.tsv", model=model, sae_dir=sae,
                       bed=[root / "elements.bed"], out=tmp_path, device="cpu")  # fmt: skip
    assert capsys.readouterr() == ("", "")
    assert {c.name for c in run.result.concepts} == {"enhancer", "promoter"}
    assert run.result.f1.shape == (16, 2)
    assert run.result.sequences["select"] + run.result.sequences["test"] == 40
    assert run.written == 0
    assert set(run.best["concept"]) <= {"enhancer", "promoter"}
    assert (run.table["f1"].between(0, 1)).all()
    for name in ("concepts.tsv", "concepts_best.parquet", "concepts.png", "concepts.json"):
        assert (tmp_path / name).is_file()


def test_bad_options_are_clear(tiny):
    root, model, sae = tiny
    with pytest.raises(ConceptError, match="regions, model and sae_dir"):
        api.concepts(regions=root / "regions.tsv", model=model)
    with pytest.raises(ConceptError, match="thresholds"):
        api.concepts(regions=root / "regions.tsv", model=model, sae_dir=sae,
                     thresholds=[0.5, 0.1])  # fmt: skip
    with pytest.raises(ConceptError, match="no concept"):
        api.concepts(regions=root / "regions.tsv", model=model, sae_dir=sae, plot=False)
