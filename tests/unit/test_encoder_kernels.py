"""The oneDNN path of the encoder (`hsg.models.kernels`) against torch's plain layers.

The fast path is the default on the CPU, so it must give the same hidden states: every
layer, with padding, v1 and v2, through `embed` and `forward_from_layer`, within 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from hsg import api
from hsg.models.encoder import load_encoder, resolve_kernels
from hsg.models.kernels import OneDNNLinear, onednn_supported

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(
    not onednn_supported(CPU, torch.float32), reason="torch built without oneDNN"
)
SEQS = ["ACGTACGTAACCGGTTACGTACGTAAGGCT" * 2, "ACGTTGCAAA", "TTTTTTGGGGGGCCCCCCAAAAAANNACGT"]


@pytest.fixture(scope="module", params=["v1", "v2"])
def model_dir(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"tiny-{request.param}") / "model"
    return api.make_tiny_model(out, request.param, layers=3, hidden=64, heads=4, seed=1)


def test_onednn_hidden_states_equal_the_plain_path(model_dir, one_thread):
    plain = load_encoder(model_dir, device="cpu", kernels="plain")
    fast = load_encoder(model_dir, device="cpu", kernels="onednn")
    assert plain.kernels == "plain" and fast.kernels == "onednn"
    assert any(isinstance(m, OneDNNLinear) for m in fast.model.modules())
    assert fast.model.encoder.layer[0].attention.self.fused_qkv is not None
    if fast.version == "v2":  # SwiGLU with silu and the multiply fused into the products
        assert fast.model.encoder.layer[0].intermediate.fused_swiglu is not None
    for layer in range(plain.num_layers + 1):
        a, b = plain.embed(SEQS, layer), fast.embed(SEQS, layer)
        assert bool(a.attention_mask.all()) is False  # padding is exercised
        torch.testing.assert_close(b.hidden, a.hidden, rtol=1e-5, atol=1e-5)
    a = plain.embed(SEQS, -1, final_norm=True)
    b = fast.embed(SEQS, -1, final_norm=True)
    torch.testing.assert_close(b.hidden, a.hidden, rtol=1e-5, atol=1e-5)
    start = plain.embed(SEQS, 1)
    torch.testing.assert_close(
        fast.forward_from_layer(start.hidden, 1, start.attention_mask),
        plain.forward_from_layer(start.hidden, 1, start.attention_mask),
        rtol=1e-5,
        atol=1e-5,
    )


def test_state_dict_is_unchanged(model_dir):
    plain = load_encoder(model_dir, device="cpu", kernels="plain")
    fast = load_encoder(model_dir, device="cpu", kernels="onednn")
    a, b = plain.model.state_dict(), fast.model.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_kernels_default_and_opt_out(monkeypatch):
    assert resolve_kernels("auto", CPU, torch.float32) == "onednn"
    assert resolve_kernels("plain", CPU, torch.float32) == "plain"
    assert resolve_kernels("auto", CPU, torch.float16) == "plain"  # not a oneDNN dtype here
    monkeypatch.setenv("HSG_ENCODER_KERNELS", "plain")
    assert resolve_kernels("auto", CPU, torch.float32) == "plain"
    with pytest.raises(ValueError, match="unknown encoder kernels"):
        resolve_kernels("fast", CPU, torch.float32)
    with pytest.raises(ValueError, match="do not run"):
        resolve_kernels("onednn", CPU, torch.float16)


@pytest.mark.skipif(
    not onednn_supported(CPU, torch.bfloat16), reason="no bfloat16 oneDNN on this CPU"
)
def test_bf16_on_cpu_stays_close(model_dir, one_thread):
    ref = load_encoder(model_dir, device="cpu", kernels="plain").embed(SEQS, -1)
    fast = load_encoder(model_dir, device="cpu", dtype="bf16")
    assert fast.kernels == "onednn" and fast.dtype == torch.bfloat16
    out = fast.embed(SEQS, -1)
    mask = ref.attention_mask
    err = (out.hidden[mask] - ref.hidden[mask]).norm() / ref.hidden[mask].norm()
    assert err < 0.05
