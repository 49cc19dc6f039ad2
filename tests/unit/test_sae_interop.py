"""SAEs in and out of SAELens and dictionary_learning, checked against the libraries.

Every foreign checkpoint here is made by the library itself: SAELens SAE classes saved with
their own `save_model` / `save_inference_model`, dictionary_learning trainers run by its
`trainSAE` (which writes ae.pt and config.json). Weights are then randomised (biases,
thresholds included) so that every rewrite of the import is exercised, and encode/decode
of the imported SAE must equal the library object's within 1e-5. Exports are read back
with SAELens's own `SAE.load_from_disk`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from hsg import api

D_IN, D_SAE = 32, 96  # D_IN: the tiny model's width
TOL = 1e-5
pytestmark = pytest.mark.slow  # importing the libraries takes ~15-30 s on 2 shared cores


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Random weights at the scale of a trained SAE: atoms of norm 0.5-1.5 (not unit, so
    norm handling is exercised), encoder rows of norm ~1, biases ~0.2."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            w = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if name in ("W_dec", "decoder.weight"):
                atom_dim = 0 if name == "decoder.weight" else 1  # nn.Linear: [d_in, d_sae]
                w = w / w.norm(dim=atom_dim, keepdim=True)
                norms = torch.rand(D_SAE, generator=gen, dtype=torch.float64) + 0.5
                w = w * (norms if atom_dim == 0 else norms[:, None])
            elif name in ("W_enc", "encoder.weight"):
                w = w * D_IN**-0.5
            else:
                w = w * 0.2
            p.copy_(w.to(p.dtype))


def _inputs(seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(256, D_IN, generator=gen)


def _assert_same(hsg_sae, encode, decode, x: torch.Tensor) -> None:
    with torch.no_grad():
        z_ref, z = encode(x), hsg_sae.encode(x)
        assert (z_ref != 0).sum() > 0, "the reference fires nothing: a vacuous comparison"
        torch.testing.assert_close(z, z_ref, atol=TOL, rtol=0)
        torch.testing.assert_close(hsg_sae.decode(z_ref), decode(z_ref), atol=TOL, rtol=0)
        torch.testing.assert_close(hsg_sae(x)[0], decode(encode(x)), atol=TOL, rtol=0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, one_thread) -> Path:
    return api.make_tiny_model(tmp_path_factory.mktemp("model") / "m", "v2", hidden=D_IN)


# ---------------------------------------------------------------------------- SAELens


def _saelens_sae(arch: str, **cfg):
    sl = pytest.importorskip("sae_lens")
    from sae_lens.saes.sae import SAEMetadata

    meta = SAEMetadata(model_name="tiny-nt", hook_name="blocks.0.hook_resid_post")
    classes = {
        "standard": (sl.StandardSAE, sl.StandardSAEConfig),
        "topk": (sl.TopKSAE, sl.TopKSAEConfig),
        "jumprelu": (sl.JumpReLUSAE, sl.JumpReLUSAEConfig),
    }
    sae_cls, cfg_cls = classes[arch]
    sae = sae_cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, metadata=meta, **cfg))
    _randomise(sae, seed=len(arch) + len(cfg))
    if arch == "jumprelu":
        with torch.no_grad():
            sae.threshold.copy_(torch.rand(D_SAE) * 0.4)
    return sae


@pytest.mark.parametrize(
    "arch, cfg, hsg_arch",
    [
        ("standard", {}, "relu"),
        ("standard", {"apply_b_dec_to_input": False}, "relu"),
        ("topk", {"k": 6}, "topk"),
        ("topk", {"k": 6, "rescale_acts_by_decoder_norm": True}, "topk"),
        ("jumprelu", {}, "jumprelu"),
        ("jumprelu", {"apply_b_dec_to_input": False}, "jumprelu"),
    ],
)
def test_saelens_import_matches_saelens(tmp_path, arch, cfg, hsg_arch):
    from sae_lens import SAE

    ref = _saelens_sae(arch, **cfg)
    ref.save_model(tmp_path / "sl")
    ref = SAE.load_from_disk(tmp_path / "sl")  # what a SAELens user gets from the files
    record = api.import_sae(tmp_path / "sl", tmp_path / "hsg", fmt="saelens")
    sae = api.load_sae(tmp_path / "hsg", device="cpu")
    assert sae.cfg.architecture == hsg_arch
    # the hook states the layer: blocks.0.hook_resid_post is the output of block 1
    assert (sae.cfg.layer, sae.cfg.model_id) == (1, "tiny-nt")
    assert record["layer_from"] == "source" and record["sae_id"] == sae.sae_id
    assert record["files"]["sae_weights.safetensors"]
    _assert_same(sae, ref.encode, ref.decode, _inputs())


def test_saelens_batchtopk_imports_as_batchtopk(tmp_path):
    """SAELens saves a trained BatchTopK SAE as jumprelu with one global threshold."""
    sl = pytest.importorskip("sae_lens")
    from sae_lens import SAE

    train = sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=5))
    _randomise(train, seed=3)
    train.topk_threshold = torch.tensor(0.3, dtype=torch.double)
    train.save_inference_model(tmp_path / "sl")
    ref = SAE.load_from_disk(tmp_path / "sl")
    api.import_sae(tmp_path / "sl", tmp_path / "hsg", fmt="saelens", model="tiny-nt", layer=2)
    sae = api.load_sae(tmp_path / "hsg", device="cpu")
    assert (sae.cfg.architecture, sae.cfg.k, sae.cfg.layer) == ("batchtopk", 5, 2)
    assert float(sae.threshold) == pytest.approx(0.3)
    _assert_same(sae, ref.encode, ref.decode, _inputs())


def test_saelens_batchtopk_training_checkpoint(tmp_path):
    """A training checkpoint (architecture batchtopk, topk_threshold, atom norms not yet
    folded) imports as the SAE SAELens's own inference export of it computes."""
    sl = pytest.importorskip("sae_lens")
    from sae_lens import SAE

    train = sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=5))
    assert train.cfg.rescale_acts_by_decoder_norm  # the training default: folded on export
    _randomise(train, seed=5)
    train.topk_threshold = torch.tensor(0.3, dtype=torch.double)
    train.save_model(tmp_path / "ckpt")
    train.save_inference_model(tmp_path / "inference")
    ref = SAE.load_from_disk(tmp_path / "inference")
    api.import_sae(tmp_path / "ckpt", tmp_path / "hsg", fmt="saelens", model="m", layer=1)
    sae = api.load_sae(tmp_path / "hsg", device="cpu")
    assert (sae.cfg.architecture, sae.cfg.k) == ("batchtopk", 5)
    _assert_same(sae, ref.encode, ref.decode, _inputs())


def test_saelens_files_hsg_cannot_reproduce_are_refused(tmp_path):
    """Run-time input normalisation and architectures hsg lacks: a one-line reason, and
    nothing written."""
    sl = pytest.importorskip("sae_lens")

    sl.GatedSAE(sl.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE)).save_model(tmp_path / "gated")
    with pytest.raises(ValueError, match="architecture 'gated' is not supported"):
        api.import_sae(tmp_path / "gated", tmp_path / "out", fmt="saelens", model="m", layer=1)
    cfg = sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, normalize_activations="layer_norm")
    sl.StandardSAE(cfg).save_model(tmp_path / "ln")
    with pytest.raises(ValueError, match="normalize_activations='layer_norm'"):
        api.import_sae(tmp_path / "ln", tmp_path / "out", fmt="saelens", model="m", layer=1)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_export_loads_in_saelens_and_round_trips(tmp_path, arch):
    pytest.importorskip("sae_lens")
    from sae_lens import SAE

    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    k = 6 if arch in ("topk", "batchtopk") else None
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, k=k, model_id="tiny-nt", layer=1)
    sae = SparseAutoencoder(cfg)
    _randomise(sae, seed=7)
    with torch.no_grad():
        if arch == "batchtopk":
            sae.threshold.fill_(0.3)
        if arch == "jumprelu":
            sae.log_threshold.copy_((torch.rand(D_SAE) * 0.4 + 0.05).log())
    sae.save(tmp_path / "hsg")
    api.export_sae(tmp_path / "hsg", tmp_path / "sl")
    ref = SAE.load_from_disk(tmp_path / "sl")
    _assert_same(sae, ref.encode, ref.decode, _inputs())
    # and back: the same architecture and, where no threshold is re-derived, the same id
    api.import_sae(tmp_path / "sl", tmp_path / "back", fmt="saelens")
    back = api.load_sae(tmp_path / "back", device="cpu")
    assert (back.cfg.architecture, back.cfg.k, back.cfg.layer) == (arch, k, 1)
    if arch != "jumprelu":
        assert back.sae_id == sae.sae_id
    _assert_same(back, ref.encode, ref.decode, _inputs())


# ------------------------------------------------------------------ dictionary_learning


@pytest.fixture(scope="module")
def dl_dirs(tmp_path_factory) -> dict[str, Path]:
    """One trainer directory per class, written by dictionary_learning's own trainSAE."""
    pytest.importorskip("dictionary_learning")
    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
    from dictionary_learning.trainers.jumprelu import JumpReluTrainer
    from dictionary_learning.trainers.standard import StandardTrainer
    from dictionary_learning.trainers.top_k import TopKTrainer
    from dictionary_learning.training import trainSAE

    root = tmp_path_factory.mktemp("dl")
    common = dict(
        steps=2, activation_dim=D_IN, dict_size=D_SAE, layer=3, lm_name="tiny-nt",
        device="cpu", warmup_steps=1, submodule_name="resid_post_layer_3",
    )  # fmt: skip
    configs = [
        dict(trainer=StandardTrainer, sparsity_warmup_steps=1, **common),
        dict(trainer=TopKTrainer, k=6, **common),
        dict(trainer=BatchTopKTrainer, k=6, threshold_start_step=0, **common),
        dict(trainer=JumpReluTrainer, sparsity_warmup_steps=1, **common),
    ]
    data = (torch.randn(64, D_IN, generator=torch.Generator().manual_seed(i)) for i in range(9))
    trainSAE(data, configs, steps=2, save_dir=str(root), device="cpu")
    names = ["AutoEncoder", "AutoEncoderTopK", "BatchTopKSAE", "JumpReluAutoEncoder"]
    return {name: root / f"trainer_{i}" for i, name in enumerate(names)}


def _dl_load(name: str, directory: Path):
    from dictionary_learning.dictionary import AutoEncoder, JumpReluAutoEncoder
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    path = directory / "ae.pt"
    if name == "AutoEncoder":
        return AutoEncoder.from_pretrained(path, normalize_decoder=False)
    if name == "JumpReluAutoEncoder":
        return JumpReluAutoEncoder.from_pretrained(path)
    return {"AutoEncoderTopK": AutoEncoderTopK, "BatchTopKSAE": BatchTopKSAE}[name].from_pretrained(
        path
    )


@pytest.mark.parametrize(
    "name, hsg_arch",
    [
        ("AutoEncoder", "relu"),
        ("AutoEncoderTopK", "topk"),
        ("BatchTopKSAE", "batchtopk"),
        ("JumpReluAutoEncoder", "jumprelu"),
    ],
)
def test_dictionary_learning_import_matches(tmp_path, dl_dirs, name, hsg_arch):
    src = tmp_path / "src"
    src.mkdir()
    trained = _dl_load(name, dl_dirs[name])
    _randomise(trained, seed=11)
    with torch.no_grad():  # thresholds the 2 training steps left trivial
        if name == "BatchTopKSAE":
            trained.threshold.fill_(0.3)
        if name == "JumpReluAutoEncoder":
            trained.threshold.copy_(torch.rand(D_SAE) * 0.4)
    # saved the way trainSAE saves (ae.pt: the CPU state dict), beside its config.json
    torch.save({k: v.cpu() for k, v in trained.state_dict().items()}, src / "ae.pt")
    (src / "config.json").write_text((dl_dirs[name] / "config.json").read_text())
    ref = _dl_load(name, src)

    with pytest.raises(ValueError, match="--layer"):  # its layer is in the script's numbering
        api.import_sae(src, tmp_path / "no-layer", fmt="dictionary-learning")
    record = api.import_sae(src, tmp_path / "hsg", fmt="dictionary-learning", layer=4)
    sae = api.load_sae(tmp_path / "hsg", device="cpu")
    assert (sae.cfg.architecture, sae.cfg.model_id, sae.cfg.layer) == (hsg_arch, "tiny-nt", 4)
    assert record["source_config"]["trainer"]["dict_class"] == name
    _assert_same(sae, ref.encode, ref.decode, _inputs())


# ------------------------------------------------------------------ into the pipeline


def test_imported_sae_ingests_and_pairs(tmp_path, tiny_model, dl_dirs):
    """An import with --model DIR records the checkpoint hash: check_compatible verifies it,
    and the SAE goes through an ingest dry run; a missing layer is a usage error."""
    from hsg.cli import cli

    def run(*args: str):
        return CliRunner().invoke(cli, ["sae", *args])

    src = str(dl_dirs["BatchTopKSAE"])
    missing = run("import", "--from", "dictionary-learning", src, "--out", str(tmp_path / "x"))
    assert missing.exit_code == 2 and "--layer" in missing.output
    out = str(tmp_path / "sae")
    result = run("import", "--from", "dictionary-learning", src, "--out", out,
                 "--model", str(tiny_model), "--layer", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["model_from"] == "model directory" and record["encoder_checkpoint_hash"]
    again = run("import", "--from", "dictionary-learning", src, "--out", out, "--layer", "1")
    assert again.exit_code == 1 and "already holds" in again.output

    encoder = api.load_encoder(tiny_model, device="cpu")
    sae = api.load_sae(tmp_path / "sae", device="cpu")
    compat = api.check_compatible(encoder, sae)
    assert compat.checkpoint_verified and compat.layer == 1
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"
    summary = api.ingest(fixtures / "loci_small.tsv", encoder, sae, dry_run=True, device="cpu")
    assert summary.sequences_encoded > 0
    exported = run("export", "--to", "saelens", "--sae", out, "--out", str(tmp_path / "sl"))
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["metadata"]["hook_name"] == "hidden_states.1"


def test_saelens_sae_steers(tmp_path, tiny_model):
    """A SAELens SAE, imported against the model it reads, drives `hsg steer`: the targets
    name the imported SAE, the no-op condition changes nothing, and the report is written."""
    from hsg.regions.synthetic import make_synthetic_dataset, write_tsv

    ref = _saelens_sae("topk", k=6)
    ref.save_model(tmp_path / "sl")
    record = api.import_sae(
        tmp_path / "sl", tmp_path / "sae", fmt="saelens", model=tiny_model, layer=1
    )
    sae = api.load_sae(tmp_path / "sae", device="cpu")
    assert record["sae_id"] == sae.sae_id and sae.cfg.encoder_checkpoint_hash
    data = write_tsv(make_synthetic_dataset(n=96, length=60, seed=3), tmp_path / "data.tsv")
    clf = api.train_classifier(
        data, tiny_model, positive="motif_positive", out=tmp_path / "clf", layer=1, epochs=2,
        device="cpu",
    )  # fmt: skip
    assert clf is not None
    targets = {
        "sae": {"id": sae.sae_id, "layer": 1, "d_sae": D_SAE, "model_id": sae.cfg.model_id},
        "parameters": {"top": 2},
        "targets": [{"feature": f"{sae.sae_id}/{i}", "index": i} for i in (2, 7)],
    }
    (tmp_path / "targets.json").write_text(json.dumps(targets))
    report = api.steer(
        tmp_path / "targets.json", tmp_path / "clf", tmp_path / "sae", tiny_model, data,
        out=tmp_path / "steer", min_acts=(0.0,), alphas=(1.0, 2.0), plots=False, device="cpu",
    )  # fmt: skip
    assert report.report.is_file() and report.provenance["sae_id"] == sae.sae_id
    noop = [r for r in report.rows if r.get("label") == "δ=0 α=1"]
    assert noop and all(r["delta_mean_prob"] == 0.0 for r in noop)
