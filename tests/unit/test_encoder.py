"""The NT encoder: equality with HF's ESM and with an independent reference, conventions,
padding invariance, strict loading and clear errors. Everything runs on tiny models."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import pytest
import torch

from hsg.models.checkpoint import backbone_state
from hsg.models.config import PRESETS, NTConfig
from hsg.models.encoder import load_encoder
from hsg.models.errors import (
    CheckpointError,
    ModelNotFoundError,
    SequenceTooLongError,
    UnsupportedModelError,
)
from hsg.models.nucleotide_transformer import NucleotideTransformer
from hsg.models.tiny import make_tiny, random_state_dict, save_model_dir, tiny_config
from hsg.models.tokenizer import NucleotideTokenizer

torch.set_num_threads(1)

SEQUENCES = [
    "ACGTAGCTAGCTAGGATCGATCGANTTGACA",
    "GATTACA",
    "ACGTTGCA" * 6,
    "ccgNNatgcatgcaTTTT",
]
NAMES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {v: make_tiny(root / v, v, layers=3, hidden=32, heads=4, seed=7) for v in ("v1", "v2")}


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """HF initialises with std 0.02, which makes every comparison trivially pass."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name.lower():
                p.copy_(1.0 * name.endswith("weight") + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
        for emb in module.modules():
            if isinstance(emb, torch.nn.Embedding):
                emb.weight.mul_(math.sqrt(emb.weight.shape[-1]))


def _hf_states(hf_model, ids, mask):
    """HF hidden states plus the raw output of the last block (HF only exposes it normed)."""
    captured = {}

    def hook(_module, _inputs, output):
        captured["raw"] = output[0] if isinstance(output, tuple) else output

    handle = hf_model.encoder.layer[-1].register_forward_hook(hook)
    with torch.no_grad():
        out = hf_model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
    handle.remove()
    return out.hidden_states, captured["raw"]


# --------------------------------------------------------------------------- v1 vs HF


def test_v1_matches_hf_esm_model_on_every_layer(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.EsmConfig(
        vocab_size=4105,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=1002,
        position_embedding_type="absolute",
        token_dropout=True,
        emb_layer_norm_before=False,
        layer_norm_eps=1e-12,
        pad_token_id=1,
        mask_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf = transformers.EsmForMaskedLM(hf_cfg).eval()
    _perturb(hf, seed=1)
    hf.save_pretrained(tmp_path)
    NucleotideTokenizer("v1").save_pretrained(tmp_path)

    enc = load_encoder(tmp_path, device="cpu")
    assert enc.version == "v1" and enc.num_layers == 3 and enc.max_tokens == 1000
    ref = enc.embed(SEQUENCES, layer=0, names=NAMES)
    hf_states, hf_raw_last = _hf_states(hf.esm, ref.input_ids, ref.attention_mask)
    real = ref.attention_mask
    for layer in range(enc.num_layers + 1):
        ours = enc.embed(SEQUENCES, layer=layer, names=NAMES).hidden
        expected = hf_raw_last if layer == enc.num_layers else hf_states[layer]
        torch.testing.assert_close(ours[real], expected[real], atol=1e-4, rtol=0)
    final = enc.embed(SEQUENCES, layer=-1, names=NAMES, final_norm=True).hidden
    torch.testing.assert_close(final[real], hf_states[-1][real], atol=1e-4, rtol=0)

    # token-dropout rescaling when <mask> tokens are present (ids fed to the module directly)
    ids = ref.input_ids.clone()
    ids[0, 2] = ids[2, 5] = 2
    with torch.no_grad():
        ours = enc.model(ids, ref.attention_mask, layer=-1, final_norm=True)
        theirs = hf.esm(input_ids=ids, attention_mask=ref.attention_mask.long()).last_hidden_state
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- v2


def test_rotary_attention_matches_hf_rotary_esm():
    """HF's native rotary ESM shares v2's attention (rotate-half RoPE after query scaling);
    only its FFN differs, so a rotary + GELU build of our module must match it exactly."""
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.EsmConfig(
        vocab_size=4107,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=2050,
        position_embedding_type="rotary",
        token_dropout=False,
        pad_token_id=1,
        mask_token_id=2,
    )
    torch.manual_seed(0)
    hf = transformers.EsmModel(hf_cfg, add_pooling_layer=False).eval()
    _perturb(hf, seed=2)
    cfg = NTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        vocab_size=4107,
        max_position_embeddings=2050,
        position_embedding_type="rotary",
        ffn="gelu",
        ffn_bias=True,
    )
    ours = NucleotideTransformer(cfg).eval()
    expected = {k: v.shape for k, v in ours.state_dict().items()}
    ours.load_state_dict(backbone_state(hf.state_dict(), expected, cfg, "hf"), strict=True)

    tok = NucleotideTokenizer("v2")
    ids, mask = tok.pad(tok.encode_batch(SEQUENCES))
    ids, mask = torch.tensor(ids), torch.tensor(mask)
    hf_states, hf_raw_last = _hf_states(hf, ids, mask)
    with torch.no_grad():
        states = ours.all_hidden_states(ids, mask)
    for layer, state in enumerate(states):
        expected_state = hf_raw_last if layer == cfg.num_hidden_layers else hf_states[layer]
        torch.testing.assert_close(state[mask], expected_state[mask], atol=1e-4, rtol=0)


def _reference_v2(weights: dict[str, torch.Tensor], cfg: NTConfig, ids, mask) -> list:
    """NT v2 written from the maths, independently of hsg's module: explicit per-head
    attention with a -inf mask, RoPE as complex multiplication of the (j, j + D/2) pairs,
    SwiGLU as silu(first half) * second half of the W1 projection."""
    w = {k.removeprefix("esm."): v.double() for k, v in weights.items()}
    n_heads, d_head = cfg.num_attention_heads, cfg.head_dim
    eps = cfg.layer_norm_eps
    b, t = ids.shape

    def ln(x, name):
        return torch.nn.functional.layer_norm(
            x, (x.shape[-1],), w[name + ".weight"], w[name + ".bias"], eps
        )

    def lin(x, name, bias=True):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if bias else y

    half = d_head // 2
    freqs = cfg.rope_theta ** (-torch.arange(half, dtype=torch.float64) * 2 / d_head)
    phase = torch.polar(torch.ones(t, half, dtype=torch.float64), torch.outer(
        torch.arange(t, dtype=torch.float64), freqs))  # fmt: skip

    def rope(x):  # x: [t, d_head]
        z = torch.complex(x[:, :half], x[:, half:]) * phase
        return torch.cat([z.real, z.imag], dim=-1)

    h = w["embeddings.word_embeddings.weight"][ids] * mask[..., None]
    states = [h]
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        x = ln(h, p + "attention.LayerNorm")
        q, k, v = (lin(x, p + f"attention.self.{n}") for n in ("query", "key", "value"))
        ctx = torch.zeros_like(h)
        for bi in range(b):
            for hd in range(n_heads):
                sl = slice(hd * d_head, (hd + 1) * d_head)
                qh = rope(q[bi, :, sl] / math.sqrt(d_head))
                kh = rope(k[bi, :, sl])
                scores = qh @ kh.T
                scores[:, ~mask[bi]] = -math.inf
                ctx[bi, :, sl] = torch.softmax(scores, dim=-1) @ v[bi, :, sl]
        a = h + lin(ctx, p + "attention.output.dense")
        up = lin(ln(a, p + "LayerNorm"), p + "intermediate.dense", bias=False)
        gate, value = up[..., : cfg.intermediate_size], up[..., cfg.intermediate_size :]
        h = a + lin(gate * torch.sigmoid(gate) * value, p + "output.dense", bias=False)
        states.append(h)
    states.append(ln(h, "encoder.emb_layer_norm_after"))
    return states


def test_v2_matches_independent_reference(tiny_dirs):
    from safetensors.torch import load_file

    enc = load_encoder(tiny_dirs["v2"], device="cpu")
    assert enc.version == "v2" and enc.max_tokens == 2048
    weights = load_file(str(tiny_dirs["v2"] / "model.safetensors"))
    assert "esm.embeddings.position_embeddings.weight" in weights  # present, like NT v2, unused
    first = enc.embed(SEQUENCES, layer=0, names=NAMES)
    ref = _reference_v2(weights, enc.config, first.input_ids, first.attention_mask)
    real = first.attention_mask
    for layer in range(enc.num_layers + 1):
        ours = enc.embed(SEQUENCES, layer=layer, names=NAMES).hidden
        torch.testing.assert_close(ours[real], ref[layer][real].float(), atol=1e-4, rtol=0)
    final = enc.embed(SEQUENCES, layer=-1, names=NAMES, final_norm=True).hidden
    torch.testing.assert_close(final[real], ref[-1][real].float(), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- conventions


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_padding_does_not_change_hidden_states(tiny_dirs, version):
    enc = load_encoder(tiny_dirs[version], device="cpu")
    batch = enc.embed(SEQUENCES, layer=-1, names=NAMES, final_norm=True)
    for i, seq in enumerate(SEQUENCES):
        alone = enc.embed([seq], layer=-1, final_norm=True)
        n = alone.hidden.shape[1]
        torch.testing.assert_close(batch.hidden[i, :n], alone.hidden[0], atol=1e-5, rtol=0)
        assert not batch.hidden[i, n:].any()  # pad rows are zero


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_fused_attention_path_agrees(tiny_dirs, version, monkeypatch):
    """Long inputs and GPUs use SDPA; short CPU inputs use plain matmul + softmax."""
    from hsg.models import nucleotide_transformer

    enc = load_encoder(tiny_dirs[version], device="cpu")
    plain = enc.embed(SEQUENCES, layer=-1, names=NAMES)
    monkeypatch.setattr(nucleotide_transformer, "SHORT_CPU_ATTENTION", 0)
    fused = enc.embed(SEQUENCES, layer=-1, names=NAMES)
    torch.testing.assert_close(fused.hidden, plain.hidden, atol=1e-5, rtol=0)


def test_batch_fields_line_up(tiny_dirs):
    enc = load_encoder(tiny_dirs["v2"], device="cpu")
    out = enc.embed(SEQUENCES, layer=1, names=NAMES)
    assert out.hidden.dtype == torch.float32 and out.hidden.device.type == "cpu"
    assert out.hidden.shape == (4, out.input_ids.shape[1], enc.hidden_size)
    assert out.attention_mask.dtype == torch.bool and out.content_mask.dtype == torch.bool
    assert not out.content_mask[:, 0].any() and out.attention_mask[:, 0].all()
    assert (out.input_ids[:, 0] == enc.tokenizer.cls_token_id).all()
    assert out.names == NAMES and out.layer == 1 and out.source_index == [0, 1, 2, 3]
    for i, seq in enumerate(SEQUENCES):
        ids = out.input_ids[i][out.content_mask[i]].tolist()
        assert [enc.tokenizer.id_to_token(t) for t in ids] == out.tokens[i]
        assert [seq.upper()[s:e] for s, e in out.offsets[i]] == out.tokens[i]
        assert out.content(i).shape == (len(out.tokens[i]), enc.hidden_size)
        pads = ~out.attention_mask[i]
        assert (out.input_ids[i][pads] == enc.tokenizer.pad_token_id).all()


def test_layer_numbering(tiny_dirs):
    enc = load_encoder(tiny_dirs["v1"], device="cpu")
    last = enc.embed(SEQUENCES, layer=enc.num_layers)
    torch.testing.assert_close(enc.embed(SEQUENCES, layer=-1).hidden, last.hidden)
    assert enc.embed(SEQUENCES, layer=-1).layer == enc.num_layers
    zero = enc.embed(SEQUENCES, layer=0).hidden
    with torch.no_grad():
        direct = enc.model.embeddings(last.input_ids, last.attention_mask)
    torch.testing.assert_close(zero, direct)
    for bad in (enc.num_layers + 1, -(enc.num_layers + 2)):
        with pytest.raises(ValueError, match="0 = embeddings"):
            enc.embed(SEQUENCES, layer=bad)
    with pytest.raises(ValueError, match="final_norm"):
        enc.embed(SEQUENCES, layer=1, final_norm=True)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_forward_from_layer_continues_the_pass(tiny_dirs, version):
    enc = load_encoder(tiny_dirs[version], device="cpu")
    mid = enc.embed(SEQUENCES, layer=1)
    full = enc.embed(SEQUENCES, layer=-1, final_norm=True)
    cont = enc.forward_from_layer(mid.hidden, 1, mid.attention_mask, final_norm=True)
    torch.testing.assert_close(cont, full.hidden, atol=1e-5, rtol=0)
    two = enc.forward_from_layer(mid.hidden, 1, mid.attention_mask, to_layer=2)
    torch.testing.assert_close(two, enc.embed(SEQUENCES, layer=2).hidden, atol=1e-5, rtol=0)


def test_iter_embed_batches_in_order(tiny_dirs):
    enc = load_encoder(tiny_dirs["v2"], device="cpu")
    batches = list(enc.iter_embed(iter(SEQUENCES), layer=2, names=iter(NAMES), batch_size=3))
    assert [len(b) for b in batches] == [3, 1]
    assert batches[1].source_index == [3] and batches[1].names == ["d"]
    whole = enc.embed(SEQUENCES, layer=2, names=NAMES)
    n = batches[1].hidden.shape[1]
    torch.testing.assert_close(batches[1].hidden[0], whole.hidden[3, :n], atol=1e-5, rtol=0)


def test_long_sequences_error_or_window(tmp_path):
    cfg = tiny_config("v2", layers=1, hidden=16, heads=2).with_(max_position_embeddings=7)
    save_model_dir(tmp_path, cfg, random_state_dict(cfg))
    enc = load_encoder(tmp_path, device="cpu")
    assert enc.max_tokens == 5
    seq = "ACGTAC" * 5 + "GG"  # 7 content tokens
    with pytest.raises(SequenceTooLongError, match="'long'"):
        enc.embed([seq], layer=1, names=["long"])
    out = enc.embed(["ACG", seq], layer=1, names=["short", "long"], window=True)
    assert out.source_index == [0, 1, 1] and out.window_start == [0, 0, 24]
    assert out.offsets[2] == [(24, 30), (30, 31), (31, 32)]
    assert out.names == ["short", "long", "long"]


def test_bf16_on_cpu_is_close_to_fp32(tiny_dirs):
    fp32 = load_encoder(tiny_dirs["v2"], device="cpu")
    bf16 = load_encoder(tiny_dirs["v2"], device="cpu", dtype="bf16")
    assert bf16.dtype == torch.bfloat16
    a, b = fp32.embed(SEQUENCES, layer=2), bf16.embed(SEQUENCES, layer=2)
    assert b.hidden.dtype == torch.float32
    assert (a.hidden - b.hidden).abs().max() < 0.1 * a.hidden.abs().max()


# --------------------------------------------------------------------------- loading


def test_checkpoint_hash_and_model_id(tiny_dirs):
    enc = load_encoder(tiny_dirs["v1"])
    digest = hashlib.sha256((tiny_dirs["v1"] / "model.safetensors").read_bytes()).hexdigest()
    assert enc.checkpoint_hash == digest
    assert enc.model_id == "v1"  # the directory name


def test_pytorch_bin_and_sharded_checkpoints(tiny_dirs, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(tiny_dirs["v2"] / "model.safetensors"))
    ref = load_encoder(tiny_dirs["v2"]).embed(SEQUENCES, layer=-1).hidden

    single = tmp_path / "bin"
    shutil.copytree(tiny_dirs["v2"], single)
    (single / "model.safetensors").unlink()
    torch.save(state, single / "pytorch_model.bin")
    torch.testing.assert_close(load_encoder(single).embed(SEQUENCES, layer=-1).hidden, ref)

    sharded = tmp_path / "sharded"
    shutil.copytree(single, sharded)
    (sharded / "pytorch_model.bin").unlink()
    keys = sorted(state)
    parts = {
        "pytorch_model-00001-of-00002.bin": keys[::2],
        "pytorch_model-00002-of-00002.bin": keys[1::2],
    }
    for fname, part in parts.items():
        torch.save({k: state[k] for k in part}, sharded / fname)
    index = {"weight_map": {k: f for f, part in parts.items() for k in part}}
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    enc = load_encoder(sharded)
    torch.testing.assert_close(enc.embed(SEQUENCES, layer=-1).hidden, ref)
    assert len(enc.weight_paths) == 2 and len(enc.checkpoint_hash) == 64


def test_strict_key_matching(tiny_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_dirs["v1"] / "model.safetensors"))
    for name, change in {
        "missing": lambda s: s.pop("esm.encoder.layer.1.output.dense.weight"),
        "unknown": lambda s: s.__setitem__("esm.encoder.layer.0.extra", torch.zeros(2)),
        "shape": lambda s: s.__setitem__("esm.encoder.layer.0.LayerNorm.bias", torch.zeros(5)),
    }.items():
        d = tmp_path / name
        shutil.copytree(tiny_dirs["v1"], d)
        broken = dict(state)
        change(broken)
        save_file(broken, str(d / "model.safetensors"))
        with pytest.raises(CheckpointError, match=str(d / "model.safetensors")):
            load_encoder(d)
    # heads and known buffers are ignored
    d = tmp_path / "extras"
    shutil.copytree(tiny_dirs["v1"], d)
    extra = dict(state)
    extra["classifier.dense.weight"] = torch.zeros(2, 2)
    extra["esm.embeddings.position_ids"] = torch.arange(4)
    save_file(extra, str(d / "model.safetensors"))
    load_encoder(d)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "bert"}, "model_type"),
        ({"position_embedding_type": "relative_key"}, "relative_key"),
        ({"add_bias_fnn": None}, "ESM-2"),  # rotary without NT v2's custom key
        ({"vocab_size": 69}, "vocab_size"),
        ({"is_folding_model": True}, "ESMFold"),
        ({"num_attention_heads": 5}, "multiple"),
    ],
)
def test_unsupported_configs_name_the_file(tiny_dirs, tmp_path, change, message):
    d = tmp_path / "m"
    shutil.copytree(tiny_dirs["v2"], d)
    config = json.loads((d / "config.json").read_text())
    for key, value in change.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match=message) as info:
        load_encoder(d)
    assert str(d / "config.json") in str(info.value)


def test_unknown_model_and_offline_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    with pytest.raises(ModelNotFoundError, match="no model directory"):
        load_encoder(tmp_path / "nowhere" / "x" / "y")
    hub_id = "InstaDeepAI/nucleotide-transformer-v2-50m-multi-species"
    with pytest.raises(ModelNotFoundError, match="never downloads") as info:
        load_encoder(hub_id)
    assert hub_id in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnsupportedModelError, match="config.json"):
        load_encoder(tmp_path / "empty")


def test_cached_hub_id_loads_offline(tiny_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--someone--tiny-nt"
    shutil.copytree(tiny_dirs["v2"], repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    enc = load_encoder("someone/tiny-nt")
    assert enc.model_id == "someone/tiny-nt" and enc.version == "v2"


# --------------------------------------------------------------------------- configs, tiny


def test_config_round_trips():
    for cfg in [*PRESETS.values(), tiny_config("v1"), tiny_config("v2")]:
        assert NTConfig.from_json(cfg.to_json()) == cfg
        assert NTConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
    assert PRESETS["v2-50m"].max_tokens == 2048 and PRESETS["v1-500m"].max_tokens == 1000
    with pytest.raises(ValueError, match="unknown"):
        NTConfig.from_dict({**tiny_config().to_dict(), "bogus": 1})


def test_make_tiny_is_deterministic(tmp_path):
    a = make_tiny(tmp_path / "a", "v1", seed=3)
    b = make_tiny(tmp_path / "b", "v1", seed=3)
    c = make_tiny(tmp_path / "c", "v1", seed=4)
    for name in ("model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    config = json.loads((a / "config.json").read_text())
    assert config["model_type"] == "esm" and config["vocab_size"] == 4105
    assert config["position_embedding_type"] == "absolute" and config["token_dropout"] is True
