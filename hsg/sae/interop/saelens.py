"""SAELens's on-disk format: `cfg.json` + `sae_weights.safetensors`, read and written.

SAELens (6.x; the pre-6 layout with top-level `hook_name`/`activation_fn_kwargs` is read
too) keeps hsg's tensor layout (W_enc [d_in, d_sae], W_dec [d_sae, d_in]) and computes

    standard:  z = ReLU((x - b_dec·a) @ W_enc + b_enc)            a = apply_b_dec_to_input
    topk:      pre = (x - b_dec·a) @ W_enc + b_enc  (× ‖W_dec_j‖ if rescale_acts_by_decoder_norm)
               z = ReLU(top-k of pre)                          (÷ ‖W_dec_j‖ before decoding)
    jumprelu:  z = ReLU(pre) · [pre > θ_j]
    x_hat = z @ W_dec + b_dec

BatchTopK is trained as `batchtopk` and saved for inference as `jumprelu` with every θ_j
equal to the global threshold; SAELens marks it with `metadata.training_architecture`.
Such a file is imported as hsg's `batchtopk` (k from the training details), and hsg's
`batchtopk` is exported that way. A training checkpoint with architecture `batchtopk`
(`topk_threshold` beside the weights) is imported as well.

Refused, with the reason: input normalisations that are not folded into the weights
(`normalize_activations` other than "none"), attention-head reshaping (`hook_z`), a
fine-tuning scaling factor, and architectures hsg does not have (gated, abstopk,
transcoders, …).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hsg.sae.interop import (
    ForeignSAE,
    InteropError,
    check_out_dir,
    check_shapes,
    dtype_name,
    fold_input_bias,
    layer_from_hook,
    read_json,
    sha256_file,
)

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
# The format version written into exported configs: SAELens reads configs without one (or
# older) through its pre-6 compatibility path, which does not know hsg's metadata.
FORMAT_VERSION = "6.0.0"
_SUPPORTED = ("standard", "topk", "jumprelu", "batchtopk")


def _major(version: Any) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def _normalised_cfg(raw: dict[str, Any]) -> dict[str, Any]:
    """The config in SAELens 6's shape (architecture, k, metadata.hook_name, …)."""
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    version = meta.get("sae_lens_version") or raw.get("sae_lens_version")
    if version is not None and _major(version) >= 6:
        return {**raw, "metadata": meta}
    # pre-6: flat config, activation function by name
    cfg = dict(raw)
    activation = cfg.get("activation_fn_str", cfg.get("activation_fn", "relu"))
    arch = cfg.get("architecture", "standard")
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if activation == "topk" and kwargs.get("k") is not None:
        arch, cfg["k"] = "topk", kwargs["k"]
    elif arch == "standard" and activation != "relu":
        raise InteropError(f"SAELens activation function {activation!r} is not supported")
    norm = cfg.get("normalize_activations")
    if isinstance(norm, bool):
        norm = "expected_average_only_in" if norm else "none"
    cfg["normalize_activations"] = norm or "none"
    cfg["architecture"] = arch
    cfg.setdefault("apply_b_dec_to_input", True)
    hook = cfg.get("hook_name", cfg.get("hook_point"))
    cfg.setdefault("reshape_activations", "hook_z" if hook and "hook_z" in hook else "none")
    cfg["metadata"] = {
        "model_name": cfg.get("model_name"),
        "hook_name": hook,
        "hook_head_index": cfg.get("hook_head_index", cfg.get("hook_point_head_index")),
    }
    return cfg


def read_saelens(path: Path) -> ForeignSAE:
    """Read a SAELens SAE directory (or its cfg.json) into hsg's form."""
    directory = path.parent if path.is_file() else path
    cfg_path, weights_path = directory / CFG_FILE, directory / WEIGHTS_FILE
    if not directory.is_dir():
        raise InteropError(f"SAELens SAE directory not found: {directory}")
    raw = read_json(cfg_path)
    if not weights_path.is_file():
        raise InteropError(f"missing file: {weights_path}")
    cfg = _normalised_cfg(raw)
    where = str(directory)
    arch = cfg.get("architecture", "standard")
    if arch not in _SUPPORTED:
        raise InteropError(
            f"{where}: SAELens architecture {arch!r} is not supported "
            f"(supported: {', '.join(_SUPPORTED)})"
        )
    if cfg.get("normalize_activations", "none") != "none":
        raise InteropError(
            f"{where}: normalize_activations={cfg['normalize_activations']!r}: the SAE expects "
            "normalised inputs; fold the normalisation into the weights with SAELens (e.g. "
            "fold_activation_norm_scaling_factor) and save it again"
        )
    if cfg.get("reshape_activations", "none") != "none":
        raise InteropError(f"{where}: attention-head (hook_z) SAEs are not supported")
    meta = cfg["metadata"]
    if meta.get("hook_head_index") is not None:
        raise InteropError(f"{where}: single-head SAEs (hook_head_index) are not supported")
    try:
        stored = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types
        raise InteropError(f"cannot read {weights_path}: {exc}") from exc
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        if name not in stored:
            raise InteropError(f"{weights_path}: no tensor {name!r} (found {sorted(stored)})")
    scale = stored.pop("scaling_factor", stored.pop("finetuning_scaling_factor", None))
    if scale is not None and not bool((scale == 1).all()):
        raise InteropError(f"{where}: fine-tuning scaling factors are not supported")
    dtype = dtype_name(stored["W_enc"].dtype, str(weights_path))
    t = {name: value.to(torch.float64) for name, value in stored.items()}
    d_in, d_sae = t["W_enc"].shape if t["W_enc"].dim() == 2 else (0, 0)
    d_in = int(cfg.get("d_in", d_in))
    d_sae = int(cfg.get("d_sae", d_sae))
    check_shapes(t, d_in, d_sae, str(weights_path))
    rewrites: list[str] = []
    k: int | None = None
    theta_key = {"jumprelu": "threshold", "batchtopk": "topk_threshold"}.get(arch)
    expected = {"W_enc", "b_enc", "W_dec", "b_dec"} | ({theta_key} if theta_key else set())
    if arch == "jumprelu" and "threshold" not in t and "log_threshold" in t:
        t["threshold"] = t.pop("log_threshold").exp()  # older SAELens training checkpoints
    if set(t) != expected:
        raise InteropError(
            f"{weights_path}: tensors {sorted(t)} do not match a {arch} SAE ({sorted(expected)})"
        )
    if not cfg.get("apply_b_dec_to_input", True):
        fold_input_bias(t)
        rewrites.append("b_enc += b_dec @ W_enc (apply_b_dec_to_input false)")
    hsg_arch = {"standard": "relu"}.get(arch, arch)
    if arch in ("topk", "batchtopk"):
        k = _integral_k(cfg.get("k"), where)
        # training configs default to rescaling; inference configs to not
        if cfg.get("rescale_acts_by_decoder_norm", arch == "batchtopk"):
            norms = t["W_dec"].norm(dim=-1)
            t["W_enc"] = t["W_enc"] * norms
            t["b_enc"] = t["b_enc"] * norms
            t["W_dec"] = t["W_dec"] / norms[:, None]
            rewrites.append("atom norms folded into W_enc, b_enc (rescale_acts_by_decoder_norm)")
    if arch == "batchtopk":
        t["theta"] = t.pop("topk_threshold").reshape(())
    elif arch == "jumprelu":
        theta = t.pop("threshold")
        if theta.shape != (d_sae,):
            raise InteropError(f"{weights_path}: threshold has shape {list(theta.shape)}")
        btk_k = _batchtopk_k(meta)
        if btk_k is not None and bool((theta == theta[0]).all()):
            hsg_arch, k = "batchtopk", btk_k
            theta = theta[0]
            rewrites.append("jumprelu with one global threshold, trained as batchtopk")
        t["theta"] = theta
    hook = meta.get("hook_name")
    hsg_meta = meta.get("hsg") if isinstance(meta.get("hsg"), dict) else {}
    return ForeignSAE(
        format="saelens",
        path=directory,
        architecture=hsg_arch,
        d_in=d_in,
        d_sae=d_sae,
        tensors=t,
        dtype=dtype,
        k=k,
        model_id=meta.get("model_name") or None,
        model_version=hsg_meta.get("model_version"),
        checkpoint_hash=hsg_meta.get("encoder_checkpoint_hash"),
        layer=layer_from_hook(hook),
        layer_note=f"hook_name {hook!r}" if hook else "no hook_name",
        rewrites=rewrites,
        source_config=raw,
        files={CFG_FILE: sha256_file(cfg_path), WEIGHTS_FILE: sha256_file(weights_path)},
    )


def _integral_k(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
        raise InteropError(f"{where}: k must be a positive integer, got {value!r}")
    if float(value) != int(value):
        raise InteropError(f"{where}: k={value} is not an integer; hsg's k counts latents")
    return int(value)


def _batchtopk_k(meta: dict[str, Any]) -> int | None:
    """k of a jumprelu file that SAELens trained as batchtopk, when it is an integer."""
    if meta.get("training_architecture") != "batchtopk":
        return None
    details = meta.get("training_architecture_details") or {}
    k = details.get("k") if isinstance(details, dict) else None
    if isinstance(k, (int, float)) and not isinstance(k, bool) and k >= 1 and k == int(k):
        return int(k)
    return None


def write_saelens(sae, out: Path) -> dict[str, Any]:
    """Write `sae` as a SAELens inference SAE into `out`; returns the config written.

    relu → standard, topk → topk, jumprelu → jumprelu (θ = exp(log_threshold), computed as
    hsg computes it), batchtopk → jumprelu with every θ_j the global threshold, marked as
    trained as batchtopk (SAELens's own convention). hsg's provenance goes into
    `metadata` (model_name, hook_name `hidden_states.<layer>`, and an `hsg` block with the
    checkpoint hash and SAE id), so importing the export restores it.
    """
    cfg = sae.cfg
    check_out_dir(out, (CFG_FILE, WEIGHTS_FILE))
    with torch.no_grad():
        tensors = {
            name: getattr(sae, name).detach().to("cpu").contiguous()
            for name in ("W_enc", "b_enc", "W_dec", "b_dec")
        }
        metadata: dict[str, Any] = {
            "sae_lens_version": FORMAT_VERSION,
            "sae_lens_training_version": FORMAT_VERSION,
            "model_name": cfg.model_id,
            "hook_name": None if cfg.layer is None else f"hidden_states.{cfg.layer}",
            "hsg": {
                "sae_id": sae.sae_id,
                "weights_sha256": sae.weights_sha256(),
                "encoder_checkpoint_hash": cfg.encoder_checkpoint_hash,
                "model_version": cfg.model_version,
                "hook": cfg.hook,
            },
        }
        arch = cfg.architecture
        extra: dict[str, Any] = {}
        if arch == "relu":
            sl_arch = "standard"
        elif arch == "topk":
            sl_arch = "topk"
            extra = {"k": cfg.k, "rescale_acts_by_decoder_norm": False}
        elif arch == "jumprelu":
            sl_arch = "jumprelu"
            tensors["threshold"] = sae.log_threshold.detach().exp().to("cpu").contiguous()
        elif arch == "batchtopk":
            sl_arch = "jumprelu"
            theta = sae.threshold.detach().to("cpu")
            tensors["threshold"] = torch.full((cfg.d_sae,), float(theta), dtype=theta.dtype)
            metadata["training_architecture"] = "batchtopk"
            metadata["training_architecture_details"] = {"k": cfg.k}
        else:
            raise InteropError(f"SAELens has no equivalent of hsg architecture {arch!r}")
    document = {
        "architecture": sl_arch,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        **extra,
        "metadata": metadata,
    }
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
    save_file(tensors, str(tmp))
    os.replace(tmp, out / WEIGHTS_FILE)
    tmp_cfg = out / f".{CFG_FILE}.tmp-{os.getpid()}"
    tmp_cfg.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp_cfg, out / CFG_FILE)
    return document
