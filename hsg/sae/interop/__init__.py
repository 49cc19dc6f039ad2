"""SAEs from other libraries in, and hsg SAEs out, without importing those libraries.

Most published SAEs live in SAELens's directory format (`cfg.json` +
`sae_weights.safetensors`) or in dictionary_learning's (`ae.pt` + `config.json`; the format
Decode-gLM publishes its NT SAEs in). An import reads those files directly (safetensors,
`torch.load(weights_only=True)`, JSON), rewrites the weights into hsg's one form

    z = act((x - b_dec) @ W_enc + b_enc),   x_hat = z @ W_dec + b_dec,

and saves a native SAE directory, so everything downstream (ids, hashes,
`check_compatible`, ingest, steering) treats it like a trained one. Every rewrite is exact
algebra, recorded in `import.json` beside the SAE, so encode and decode agree with the
library's own SAE object up to float rounding:

- a library that does not subtract `b_dec` before encoding gets `b_enc + b_dec @ W_enc`;
- SAELens's `rescale_acts_by_decoder_norm` (TopK) is folded in: `W_enc`, `b_enc` times the
  atom norms, `W_dec` divided by them, so the latents are the ones SAELens returns;
- thresholds: JumpReLU's per-latent θ becomes `log_threshold` (θ > 0 in hsg; a θ <= 0 gates
  nothing beyond the ReLU and becomes the smallest normal float), BatchTopK's global θ stays
  a scalar (a negative "not yet estimated" θ becomes 0: plain ReLU, as the library does).

The libraries themselves are test dependencies only (`pip install hsg[interop]`): the tests
build foreign checkpoints with them and compare their encode/decode with hsg's.

Provenance: an SAE is meaningful only with the encoder checkpoint and layer it read. The
encoder (`model`) and the layer in hsg's convention (0 = embeddings, i = output of block i)
come from the caller or, when the source states them unambiguously, from the source; with
neither the import fails and says what the source recorded. A model given as a directory is
hashed exactly as `Encoder.checkpoint_hash` does, so `check_compatible` verifies it later.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

IMPORT_FILE = "import.json"
FORMATS: tuple[str, ...] = ("saelens", "dictionary-learning")
EXPORT_FORMATS: tuple[str, ...] = ("saelens",)
_DTYPES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
}


class InteropError(ValueError):
    """A foreign SAE that cannot be imported exactly, or an export that cannot be written."""


class MissingProvenanceError(InteropError):
    """The source does not say which encoder or layer it reads, and the caller did not."""


@dataclass
class ForeignSAE:
    """A foreign SAE rewritten into hsg's form, before provenance is settled.

    `tensors` are float64, in hsg's names and layout: W_enc [d_in, d_sae], b_enc [d_sae],
    W_dec [d_sae, d_in], b_dec [d_in] and, by architecture, `theta` (JumpReLU: [d_sae];
    BatchTopK: a scalar). `layer` is in hsg's convention, None when the source's cannot be
    mapped; `layer_note` says what the source recorded.
    """

    format: str
    path: Path
    architecture: str
    d_in: int
    d_sae: int
    tensors: dict[str, torch.Tensor]
    dtype: str = "float32"
    k: int | None = None
    model_id: str | None = None
    model_version: str | None = None
    checkpoint_hash: str | None = None
    layer: int | None = None
    layer_note: str = ""
    rewrites: list[str] = field(default_factory=list)
    source_config: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EncoderIdentity:
    """What an SAE records about its encoder: id, version and checkpoint hash (if known)."""

    model_id: str
    version: str | None = None
    checkpoint_hash: str | None = None
    hidden_size: int | None = None
    num_layers: int | None = None
    directory: Path | None = None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InteropError(f"missing file: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InteropError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InteropError(f"{path}: expected a JSON object")
    return data


def dtype_name(dtype: torch.dtype, where: str) -> str:
    if dtype not in _DTYPES:
        raise InteropError(f"{where}: tensors of dtype {dtype} are not supported")
    return _DTYPES[dtype]


def check_shapes(t: dict[str, torch.Tensor], d_in: int, d_sae: int, where: str) -> None:
    want = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    for name, shape in want.items():
        if tuple(t[name].shape) != shape:
            raise InteropError(
                f"{where}: {name} has shape {list(t[name].shape)}, expected {list(shape)} "
                f"(d_in={d_in}, d_sae={d_sae})"
            )


def fold_input_bias(t: dict[str, torch.Tensor]) -> None:
    """`x @ W_enc + b_enc` == `(x - b_dec) @ W_enc + (b_enc + b_dec @ W_enc)`."""
    t["b_enc"] = t["b_enc"] + t["b_dec"] @ t["W_enc"]


def layer_from_hook(hook: str | None) -> int | None:
    """hsg's layer for a hook name that states it unambiguously, else None.

    `hidden_states.N` (what `export` writes) is N; TransformerLens's residual stream hooks
    `blocks.N.hook_resid_pre` (the input of block N) and `blocks.N.hook_resid_post` (its
    output) are N and N + 1. Anything else (a module path, an attention hook) is not a
    hidden state hsg can name without guessing.
    """
    if not hook:
        return None
    if m := re.fullmatch(r"hidden_states\.(\d+)", hook):
        return int(m[1])
    if m := re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", hook):
        return int(m[1]) + (1 if m[2] == "post" else 0)
    return None


def log_threshold_exact(theta: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`log θ` in `dtype` whose `exp` (as hsg computes it) gives back θ wherever it can.

    A rounded log can miss θ by one ulp after `exp`, which would move every pre-activation
    between the two values across the gate; nudging the log by a few ulps removes that.
    θ <= 0 passes everything the ReLU passes: it becomes the smallest normal float.
    """
    tiny = torch.finfo(dtype).tiny
    target = theta.to(torch.float64).clamp_min(tiny).to(dtype)
    log = target.to(torch.float64).log().to(dtype)
    for _ in range(8):
        got = log.exp()
        if bool((got == target).all()):
            break
        up = torch.nextafter(log, torch.full_like(log, math.inf))
        down = torch.nextafter(log, torch.full_like(log, -math.inf))
        log = torch.where(got < target, up, torch.where(got > target, down, log))
    return log


def encoder_identity(model: str | Path) -> EncoderIdentity:
    """The identity of `model`: a model directory (or cached hub id) is read and hashed as
    `Encoder.checkpoint_hash` does; anything else is taken as a bare model id (no hash)."""
    from hsg.models.checkpoint import sha256_of, weight_files
    from hsg.models.config import NTConfig
    from hsg.models.encoder import resolve_model_dir
    from hsg.models.errors import ModelNotFoundError

    text = str(model)
    try:
        directory, model_id = resolve_model_dir(text)
    except ModelNotFoundError:
        if Path(text).expanduser().exists():
            raise
        return EncoderIdentity(model_id=text)
    config = NTConfig.from_model_dir(directory)
    return EncoderIdentity(
        model_id=model_id,
        version=config.version,
        checkpoint_hash=sha256_of(weight_files(directory)),
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        directory=directory,
    )


def read_foreign(fmt: str, path: str | Path) -> ForeignSAE:
    """Read a foreign SAE directory of format `fmt` (one of `FORMATS`)."""
    src = Path(path)
    if fmt == "saelens":
        from hsg.sae.interop.saelens import read_saelens

        return read_saelens(src)
    if fmt == "dictionary-learning":
        from hsg.sae.interop.dictionary_learning import read_dictionary_learning

        return read_dictionary_learning(src)
    raise InteropError(f"unknown SAE format {fmt!r} (known: {', '.join(FORMATS)})")


def settle_provenance(
    foreign: ForeignSAE, model: str | Path | None, layer: int | None
) -> tuple[ForeignSAE, EncoderIdentity | None, dict[str, str]]:
    """Fill in the encoder and layer: the caller's first, else the source's; fail if neither.

    Returns the updated SAE, the encoder identity when `model` was given, and where each
    value came from (for `import.json`).
    """
    where = f"{foreign.format} SAE {foreign.path}"
    origin: dict[str, str] = {}
    ident = None
    if model is not None:
        ident = encoder_identity(model)
        if ident.hidden_size is not None and ident.hidden_size != foreign.d_in:
            raise InteropError(
                f"{where} reads width {foreign.d_in}, but {ident.model_id} has hidden size "
                f"{ident.hidden_size}: it was not trained on this model"
            )
        foreign.model_id = ident.model_id
        foreign.model_version = ident.version
        foreign.checkpoint_hash = ident.checkpoint_hash
        origin["model"] = "model directory" if ident.directory is not None else "model id"
    elif foreign.model_id:
        origin["model"] = "source"
    else:
        raise MissingProvenanceError(
            f"{where} records no encoder model: give the model (--model MODEL_DIR, or a "
            "model id when its checkpoint is not at hand)"
        )
    if layer is not None:
        if layer < 0:
            raise InteropError(f"layer must be >= 0, got {layer}")
        foreign.layer = layer
        origin["layer"] = "given"
    elif foreign.layer is not None:
        origin["layer"] = "source"
    else:
        note = f" ({foreign.layer_note})" if foreign.layer_note else ""
        raise MissingProvenanceError(
            f"{where} does not state its layer in hsg's convention{note}: give --layer "
            "(0 = embeddings, i = output of transformer block i)"
        )
    if ident is not None and ident.num_layers is not None and foreign.layer > ident.num_layers:
        raise InteropError(
            f"layer {foreign.layer} does not exist: {ident.model_id} has layers "
            f"0..{ident.num_layers}"
        )
    return foreign, ident, origin


def to_sae(foreign: ForeignSAE):
    """The native `SparseAutoencoder` of a foreign SAE whose provenance is settled."""
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder, torch_dtype

    cfg = SAEConfig(
        d_in=foreign.d_in,
        d_sae=foreign.d_sae,
        architecture=foreign.architecture,
        k=foreign.k,
        dtype=foreign.dtype,
        model_id=foreign.model_id,
        model_version=foreign.model_version,
        layer=foreign.layer,
        encoder_checkpoint_hash=foreign.checkpoint_hash,
    )
    dtype = torch_dtype(foreign.dtype)
    t = foreign.tensors
    weights = {name: t[name].to(dtype) for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if foreign.architecture == "jumprelu":
        weights["log_threshold"] = log_threshold_exact(t["theta"], dtype)
    elif foreign.architecture == "batchtopk":
        weights["threshold"] = t["theta"].clamp_min(0.0).to(dtype).reshape(())
    sae = SparseAutoencoder(cfg)
    sae.load_weights_(weights)
    return sae.eval()


def check_out_dir(out: Path, names: tuple[str, ...]) -> None:
    """Refuse to write over an SAE already stored in `out`."""
    if out.exists() and not out.is_dir():
        raise InteropError(f"{out} exists and is not a directory")
    taken = [n for n in names if (out / n).exists()]
    if taken:
        raise InteropError(
            f"{out} already holds {', '.join(taken)}: choose an empty output directory"
        )


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def import_record(foreign: ForeignSAE, origin: dict[str, str], sae) -> dict[str, Any]:
    """The `import.json` document: where the SAE came from and how it was rewritten."""
    from hsg import __version__

    return {
        "format": foreign.format,
        "path": str(foreign.path.resolve()),
        "files": foreign.files,
        "source_config": foreign.source_config,
        "model_id": foreign.model_id,
        "model_from": origin.get("model"),
        "encoder_checkpoint_hash": foreign.checkpoint_hash,
        "layer": foreign.layer,
        "layer_from": origin.get("layer"),
        "source_layer": foreign.layer_note,
        "rewrites": foreign.rewrites,
        "sae_id": sae.sae_id,
        "weights_sha256": sae.cfg.weights_sha256,
        "hsg_version": __version__,
    }


__all__ = [
    "EXPORT_FORMATS",
    "FORMATS",
    "IMPORT_FILE",
    "EncoderIdentity",
    "ForeignSAE",
    "InteropError",
    "MissingProvenanceError",
    "encoder_identity",
    "read_foreign",
    "settle_provenance",
    "to_sae",
]
