"""The NT v1/v2 encoder in plain torch, with the module tree of HF's ``EsmModel``.

Module and parameter names mirror the hub checkpoints (minus their ``esm.`` prefix), so
official weights load with strict key matching and no renaming table. Both generations are
pre-LayerNorm transformers:

    h0 = embeddings(ids)                        # token-dropout scaling (v1), + positions (v1)
    a  = h + Wo · attn(LN(h))                   # queries scaled by 1/sqrt(d_head) *before*
    h' = a + W2 · f(W1 · LN(a))                 #   rotary (v2), as in ESM
    last_hidden_state = emb_layer_norm_after(h_L)

with f = erf-GELU (v1) or SwiGLU ``silu(x1) * x2`` over the two halves of a bias-free
``W1`` projection to ``2 * intermediate_size`` (v2).

Layer convention used everywhere in hsg: hidden state 0 is the embeddings output (after any
scaling, with pad rows zeroed), hidden state i (1..L) is the raw output of block i. The final
``emb_layer_norm_after`` is applied only on request (``final_norm``) and only at i = L; that
is what HF returns as ``last_hidden_state`` and as the last entry of ``hidden_states``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hsg.models.config import NTConfig

# ESM was trained with 15% masking, 80% of it as <mask>; at inference the embeddings are
# rescaled as if that fraction had been dropped (HF EsmEmbeddings, "token dropout").
MASK_RATIO_TRAIN = 0.15 * 0.8
# On CPU, for short inputs (100 bp windows are 21 tokens), plain matmul + softmax beats
# SDPA's fused kernel by ~1.5x; past this length the [B, H, T, T] scores get too big.
SHORT_CPU_ATTENTION = 256


class Embeddings(nn.Module):
    def __init__(self, config: NTConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        if config.position_embedding_type == "absolute":
            self.position_embeddings = nn.Embedding(
                config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
            )
        if config.emb_layer_norm_before:
            self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        x = self.word_embeddings(input_ids)
        if cfg.token_dropout:
            is_mask = input_ids == cfg.mask_token_id
            x = x.masked_fill(is_mask.unsqueeze(-1), 0.0)
            observed = is_mask.sum(-1).float() / attention_mask.sum(-1).float()
            scale = (1.0 - MASK_RATIO_TRAIN) / (1.0 - observed)
            x = (x * scale[:, None, None]).to(x.dtype)
        if cfg.position_embedding_type == "absolute":
            # ESM numbers real tokens from pad_token_id + 1; pads get the pad row.
            not_pad = (input_ids != cfg.pad_token_id).long()
            positions = torch.cumsum(not_pad, dim=1) * not_pad + cfg.pad_token_id
            x = x + self.position_embeddings(positions)
        if cfg.emb_layer_norm_before:
            x = self.layer_norm(x)
        return x * attention_mask.unsqueeze(-1).to(x.dtype)


def rotary_tables(
    length: int, head_dim: int, theta: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape [T, head_dim] in float32 (rotate-half layout, positions 0..T-1)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(length, device=device).float(), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [B, H, T, D] by position; computed in float32 so bf16 runs keep the angles."""
    xf = x.float()
    half = xf.shape[-1] // 2
    rotated = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    out = xf * cos
    out += rotated.mul_(sin)  # in place on temporaries: the same operations, fewer buffers
    return out.to(x.dtype)


def add_linear(residual: torch.Tensor, linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``residual + linear(x)``, with the addition fused into the product when the layer
    offers it (`hsg.models.kernels.OneDNNLinear.add_to`)."""
    fused = getattr(linear, "add_to", None)
    return fused(x, residual) if fused is not None else residual + linear(x)


class SelfAttention(nn.Module):
    def __init__(self, config: NTConfig):
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.query_scale = self.head_dim**-0.5
        # set by hsg.models.kernels.use_onednn: q, k, v in one product, the queries already
        # scaled (not a parameter)
        self.fused_qkv = None

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        b, t, _ = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

        if self.fused_qkv is not None:
            q, k, v = (heads(y) for y in self.fused_qkv(x))
        else:
            q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
            q = q * self.query_scale
        if rotary is not None:
            q = apply_rotary(q, *rotary)
            k = apply_rotary(k, *rotary)
        if x.device.type == "cpu" and t <= SHORT_CPU_ATTENTION:
            scores = q @ k.transpose(-1, -2)
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask, float("-inf"))
            out = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=1.0)
        return out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim)


class SelfOutput(nn.Module):
    def __init__(self, config: NTConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)


class Attention(nn.Module):
    def __init__(self, config: NTConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = SelfOutput(config)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h, key_mask, rotary):
        return add_linear(h, self.output.dense, self.self(self.LayerNorm(h), key_mask, rotary))


class Intermediate(nn.Module):
    def __init__(self, config: NTConfig):
        super().__init__()
        self.glu = config.ffn == "swiglu"
        width = config.intermediate_size * (2 if self.glu else 1)
        self.dense = nn.Linear(config.hidden_size, width, bias=config.ffn_bias)
        self.fused_swiglu = None  # set by hsg.models.kernels.use_onednn (not a parameter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_swiglu is not None:
            return self.fused_swiglu(x)
        x = self.dense(x)
        if self.glu:
            gate, value = x.chunk(2, dim=-1)
            return F.silu(gate) * value
        return F.gelu(x)  # exact (erf) GELU, as ESM


class Output(nn.Module):
    def __init__(self, config: NTConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.ffn_bias)


class Layer(nn.Module):
    def __init__(self, config: NTConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = Output(config)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h, key_mask, rotary):
        a = self.attention(h, key_mask, rotary)
        return add_linear(a, self.output.dense, self.intermediate(self.LayerNorm(a)))


class Encoder(nn.Module):
    def __init__(self, config: NTConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.emb_layer_norm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class NucleotideTransformer(nn.Module):
    """Backbone only (no LM head): what the hsg pipeline reads hidden states from."""

    def __init__(self, config: NTConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    def check_layer(self, layer: int) -> int:
        """Normalise a layer index (negative counts from the end: -1 = last block)."""
        n = self.num_layers
        if not isinstance(layer, int) or isinstance(layer, bool) or not -(n + 1) <= layer <= n:
            raise ValueError(
                f"layer {layer!r} is out of range 0..{n} "
                "(0 = embeddings output, i = output of block i)"
            )
        return layer % (n + 1)

    def _context(self, attention_mask: torch.Tensor, length: int, device: torch.device):
        # Without padding no mask is needed, which lets SDPA take its fused kernels.
        mask = attention_mask.bool()
        key_mask = None if bool(mask.all()) else mask[:, None, None, :]
        rotary = None
        if self.config.position_embedding_type == "rotary":
            rotary = rotary_tables(length, self.config.head_dim, self.config.rope_theta, device)
        return key_mask, rotary

    def run_blocks(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int
    ) -> torch.Tensor:
        """Hidden state ``stop`` from hidden state ``start`` (runs blocks start+1..stop)."""
        key_mask, rotary = self._context(attention_mask, hidden.shape[1], hidden.device)
        for block in self.encoder.layer[start:stop]:
            hidden = block(hidden, key_mask, rotary)
        return hidden

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int | None = None,
        final_norm: bool = False,
    ) -> torch.Tensor:
        """Hidden state ``layer`` (default: the last); blocks past it are not run."""
        layer = self.num_layers if layer is None else self.check_layer(layer)
        if final_norm and layer != self.num_layers:
            raise ValueError(
                f"final_norm applies to the last layer ({self.num_layers}) only, not {layer}"
            )
        hidden = self.embeddings(input_ids, attention_mask)
        hidden = self.run_blocks(hidden, attention_mask, 0, layer)
        if final_norm:
            hidden = self.encoder.emb_layer_norm_after(hidden)
        return hidden

    def all_hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> list[torch.Tensor]:
        """Hidden states 0..L in one pass (raw block outputs; no final norm)."""
        hidden = self.embeddings(input_ids, attention_mask)
        key_mask, rotary = self._context(attention_mask, hidden.shape[1], hidden.device)
        states = [hidden]
        for block in self.encoder.layer:
            hidden = block(hidden, key_mask, rotary)
            states.append(hidden)
        return states
