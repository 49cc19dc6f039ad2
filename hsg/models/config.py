"""Typed description of an NT encoder, read from and written to the checkpoints' config.json.

NT checkpoints on the Hugging Face hub are ESM configs (``model_type: esm``). Two
combinations are NT and supported:

- v1 (``nucleotide-transformer-500m-*``, ``-2.5b-*``): learned absolute positions,
  ``token_dropout: true``, GELU feed-forward with biases, 4105 embedding rows.
- v2 (``nucleotide-transformer-v2-*``): ``position_embedding_type: rotary`` plus the custom
  key ``add_bias_fnn`` (false), which marks InstaDeep's SwiGLU feed-forward; 4107 rows.

Everything else (ESM-2 protein models, ESMFold, the 3-mer v2 model, relative positions) is
refused with an error naming the config file, rather than loaded into the wrong maths.
The hub's ``auto_map`` (remote code) is ignored: the architecture is ours.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from hsg.models.errors import UnsupportedModelError
from hsg.models.tokenizer import EMBEDDING_ROWS

CONFIG_FILE = "config.json"
POSITION_TYPES = ("absolute", "rotary")
FFN_TYPES = ("gelu", "swiglu")
NT_PAD_ID = 1
NT_MASK_ID = 2


@dataclass(frozen=True)
class NTConfig:
    """Hyper-parameters of one NT encoder; field names follow HF's ``EsmConfig``.

    ``ffn``/``ffn_bias`` are derived from ``add_bias_fnn`` when reading HF configs; keeping
    them explicit lets tests build hybrids (rotary + GELU) that match HF's native ESM.
    """

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    position_embedding_type: str = "rotary"
    ffn: str = "swiglu"
    ffn_bias: bool = False
    token_dropout: bool = False
    emb_layer_norm_before: bool = False
    layer_norm_eps: float = 1e-12
    pad_token_id: int = NT_PAD_ID
    mask_token_id: int = NT_MASK_ID
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if self.position_embedding_type not in POSITION_TYPES:
            raise ValueError(f"position_embedding_type must be one of {POSITION_TYPES}")
        if self.ffn not in FFN_TYPES:
            raise ValueError(f"ffn must be one of {FFN_TYPES}")
        for name in ("hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.num_hidden_layers < 0:
            raise ValueError("num_hidden_layers must be >= 0")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.position_embedding_type == "rotary" and self.head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head size, got {self.head_dim}")
        if self.max_tokens < 2:
            raise ValueError(f"max_position_embeddings {self.max_position_embeddings} is too small")

    @property
    def version(self) -> str:
        """``"v1"``, ``"v2"``, or ``"custom"`` for test-only hybrids."""
        if self.position_embedding_type == "absolute" and self.ffn == "gelu":
            return "v1"
        if self.position_embedding_type == "rotary" and self.ffn == "swiglu":
            return "v2"
        return "custom"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_tokens(self) -> int:
        """Longest input including ``<cls>``.

        ESM numbers positions from ``pad_token_id + 1``, so ``max_position_embeddings`` rows
        hold ``max_position_embeddings - pad_token_id - 1`` tokens (1002 → 1000 for v1,
        2050 → 2048 for v2, where the limit is the published training length).
        """
        return self.max_position_embeddings - self.pad_token_id - 1

    # ----------------------------------------------------------------- own JSON

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown NTConfig fields: {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NTConfig:
        return cls.from_dict(json.loads(text))

    def with_(self, **changes: Any) -> NTConfig:
        return replace(self, **changes)

    # ----------------------------------------------------------------- HF config.json

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``config.json`` an official NT checkpoint of this shape carries.

        ``auto_map`` is left out: it points at hub code, which nothing here runs.
        """
        if self.version == "custom":
            raise ValueError("only NT v1/v2 configurations have an official config.json form")
        out: dict[str, Any] = {
            "architectures": ["EsmForMaskedLM"],
            "attention_probs_dropout_prob": 0.0,
            "emb_layer_norm_before": self.emb_layer_norm_before,
            "esmfold_config": None,
            "hidden_dropout_prob": 0.0,
            "hidden_size": self.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "is_folding_model": False,
            "layer_norm_eps": self.layer_norm_eps,
            "mask_token_id": self.mask_token_id,
            "max_position_embeddings": self.max_position_embeddings,
            "model_type": "esm",
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "pad_token_id": self.pad_token_id,
            "position_embedding_type": self.position_embedding_type,
            "tie_word_embeddings": False,
            "token_dropout": self.token_dropout,
            "torch_dtype": "float32",
            "use_cache": False,
            "vocab_list": None,
            "vocab_size": self.vocab_size,
        }
        if self.version == "v2":
            out["add_bias_fnn"] = self.ffn_bias
        return out

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any], source: str = CONFIG_FILE) -> NTConfig:
        """Validate an HF ``config.json`` and map it; ``source`` names the file in errors."""

        def fail(why: str) -> UnsupportedModelError:
            return UnsupportedModelError(f"{source}: {why}")

        model_type = data.get("model_type", "esm")
        if model_type != "esm":
            raise fail(f"model_type {model_type!r} is not an ESM/Nucleotide Transformer model")
        if data.get("is_folding_model"):
            raise fail("ESMFold (is_folding_model) is not a Nucleotide Transformer encoder")
        position = data.get("position_embedding_type", "absolute")
        has_glu_key = "add_bias_fnn" in data
        if position == "absolute" and not has_glu_key:
            ffn, ffn_bias = "gelu", True
        elif position == "rotary" and has_glu_key:
            ffn, ffn_bias = "swiglu", bool(data["add_bias_fnn"])
        elif position == "rotary":
            raise fail(
                "rotary ESM without NT v2's add_bias_fnn key (an ESM-2 protein model?) is not "
                "supported; only NT v1 (absolute) and NT v2 (rotary + SwiGLU) are"
            )
        elif position == "absolute":
            raise fail("absolute positions with add_bias_fnn match neither NT v1 nor NT v2")
        else:
            raise fail(f"position_embedding_type {position!r} is not supported")

        required = (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "vocab_size",
            "max_position_embeddings",
        )
        missing = [k for k in required if not isinstance(data.get(k), int)]
        if missing:
            raise fail(f"missing or non-integer keys {missing}")
        version = "v1" if position == "absolute" else "v2"
        if data["vocab_size"] != EMBEDDING_ROWS[version]:
            raise fail(
                f"vocab_size {data['vocab_size']} is not the NT {version} 6-mer vocabulary "
                f"({EMBEDDING_ROWS[version]}); other tokenizers (e.g. the 3-mer v2 model) are "
                "not supported"
            )
        if (
            data.get("pad_token_id", NT_PAD_ID) != NT_PAD_ID
            or data.get("mask_token_id", NT_MASK_ID) != NT_MASK_ID
        ):
            raise fail("pad_token_id/mask_token_id differ from NT's (1/2)")
        rope = data.get("rope_theta") or (data.get("rope_parameters") or {}).get("rope_theta")
        try:
            return cls(
                hidden_size=data["hidden_size"],
                num_hidden_layers=data["num_hidden_layers"],
                num_attention_heads=data["num_attention_heads"],
                intermediate_size=data["intermediate_size"],
                vocab_size=data["vocab_size"],
                max_position_embeddings=data["max_position_embeddings"],
                position_embedding_type=position,
                ffn=ffn,
                ffn_bias=ffn_bias,
                token_dropout=bool(data.get("token_dropout", False)),
                emb_layer_norm_before=bool(data.get("emb_layer_norm_before") or False),
                layer_norm_eps=float(data.get("layer_norm_eps", 1e-12)),
                rope_theta=float(rope) if rope else 10000.0,
            )
        except ValueError as exc:
            raise fail(str(exc)) from exc

    @classmethod
    def from_model_dir(cls, directory: str | Path) -> NTConfig:
        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise UnsupportedModelError(f"{directory}: no {CONFIG_FILE}; not an HF model directory")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UnsupportedModelError(f"{path}: invalid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise UnsupportedModelError(f"{path}: expected a JSON object")
        return cls.from_hf_dict(data, str(path))

    def save_hf(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_FILE
        path.write_text(json.dumps(self.to_hf_dict(), indent=2, sort_keys=True) + "\n")
        return path


def v1_config(**shape: Any) -> NTConfig:
    """An NT v1-shaped config (absolute positions, token dropout, GELU FFN with bias)."""
    base = dict(
        vocab_size=EMBEDDING_ROWS["v1"],
        max_position_embeddings=1002,
        position_embedding_type="absolute",
        ffn="gelu",
        ffn_bias=True,
        token_dropout=True,
    )
    return NTConfig(**{**base, **shape})


def v2_config(**shape: Any) -> NTConfig:
    """An NT v2-shaped config (rotary, bias-free SwiGLU FFN, no token dropout)."""
    base = dict(
        vocab_size=EMBEDDING_ROWS["v2"],
        max_position_embeddings=2050,
        position_embedding_type="rotary",
        ffn="swiglu",
        ffn_bias=False,
        token_dropout=False,
    )
    return NTConfig(**{**base, **shape})


def _shape(layers: int, hidden: int, heads: int, inter: int) -> dict[str, int]:
    return dict(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=inter,
    )


# Shapes of the published checkpoints (config.json of the hub repos; the v2-50m shape is the
# one whose parameter count, 55.9M with the LM head, matches the hub listing).
PRESETS: dict[str, NTConfig] = {
    "v1-500m": v1_config(**_shape(24, 1280, 20, 5120)),
    "v1-2.5b": v1_config(**_shape(32, 2560, 20, 10240)),
    "v2-50m": v2_config(**_shape(12, 512, 16, 2048)),
    "v2-100m": v2_config(**_shape(22, 512, 16, 2048)),
    "v2-500m": v2_config(**_shape(29, 1024, 16, 4096)),
}
