"""Downstream loss recovered: a perfect reconstruction recovers 1, a zero one 0, and the
MLM head hsg evaluates is the one transformers' EsmForMaskedLM computes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from hsg import api
from hsg.sae.config import SAEConfig
from hsg.sae.eval_downstream import loss_recovered, mlm_logits, read_lm_head
from hsg.sae.model import SparseAutoencoder

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "ingest" / "loci_small.tsv"
SEQS = [
    "ACGTACGTAAGGCTTACCGGATTACAGGCATGCAAGTTCCAGGA" * 3,
    "TTGACCGGTAACGTTAGCAGGCCATTAGGACCATGGA" * 4,
    "GGGCCCAAATTTACGTACGTTTGACAGTACCA" * 2,
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("ds")
    model = api.make_tiny_model(root / "model", "v2", layers=3)
    return model, api.load_encoder(model, device="cpu")


def _sae(encoder, how: str) -> SparseAutoencoder:
    """identity: z = [ReLU(x), ReLU(-x)], x_hat = z @ [I; -I] = x exactly; zero: x_hat = 0."""
    d = encoder.hidden_size
    cfg = SAEConfig(
        d_in=d, d_sae=2 * d, layer=1, model_id=encoder.model_id,
        encoder_checkpoint_hash=encoder.checkpoint_hash,
    )  # fmt: skip
    sae = SparseAutoencoder(cfg)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0) if how == "identity" else 0 * sae.W_dec)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def test_identity_recovers_one_and_zero_recovers_zero(tiny):
    _, encoder = tiny
    ident = loss_recovered(encoder, _sae(encoder, "identity"), 1, SEQS)
    assert ident["mlm_head"] and ident["masked_tokens"] >= len(SEQS)
    assert ident["mlm_loss_zero"] > ident["mlm_loss_clean"] + 0.05  # ablation hurts
    assert ident["loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert ident["hidden_recovered"] == pytest.approx(1.0, abs=1e-4)
    zero = loss_recovered(encoder, _sae(encoder, "zero"), 1, SEQS)
    assert zero["loss_recovered"] == pytest.approx(0.0, abs=1e-6)
    assert zero["mlm_loss_clean"] == pytest.approx(ident["mlm_loss_clean"])  # same seed
    # without the head: the final hidden states decide, with the same end points
    no_head = loss_recovered(encoder, _sae(encoder, "zero"), 1, SEQS, head=False)
    assert not no_head["mlm_head"] and no_head["loss_recovered"] == pytest.approx(0.0, abs=1e-6)


def test_mlm_head_matches_transformers(tmp_path, one_thread):
    """The head on the final hidden state gives EsmForMaskedLM's logits (NT v1 = plain ESM)."""
    transformers = pytest.importorskip("transformers")
    model = api.make_tiny_model(tmp_path / "v1", "v1")
    encoder = api.load_encoder(model, device="cpu")
    hf = transformers.EsmForMaskedLM.from_pretrained(model).eval()
    rows = [encoder.tokenizer.encode(s[:60]) for s in SEQS]
    ids, attn = encoder.tokenizer.pad(rows)
    ids_t, attn_t = torch.tensor(ids), torch.tensor(attn)
    with torch.no_grad():
        ref = hf(input_ids=ids_t, attention_mask=attn_t.long()).logits
        final = encoder.model(ids_t, attn_t, final_norm=True)
        ours = mlm_logits(read_lm_head(encoder), final, encoder.config.layer_norm_eps)
    torch.testing.assert_close(ours[attn_t], ref[attn_t], atol=1e-4, rtol=1e-4)


def test_cli_eval_reports_loss_recovered(tiny, tmp_path):
    model, encoder = tiny
    _sae(encoder, "identity").save(tmp_path / "sae")
    result = CliRunner().invoke(
        api_cli(),
        ["sae", "eval", "--sae", str(tmp_path / "sae"), "--data", str(DATA), "--model",
         str(model), "--downstream-sequences", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["fve"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["downstream_sequences"] == 2 and metrics["dead_latents"] >= 0
    assert {"l0", "dense_latents", "dense_fraction", "dead_fraction"} <= set(metrics)


def api_cli():
    from hsg.cli import cli

    return cli
