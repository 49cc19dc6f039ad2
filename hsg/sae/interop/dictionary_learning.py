"""dictionary_learning's on-disk format: `ae.pt` (a state dict) + `config.json`.

`trainSAE` writes `{"trainer": trainer.config, "buffer": …}` to `config.json` and the
autoencoder's state dict to `ae.pt`; the class is `trainer.dict_class` (or follows from
`trainer_class`). The classes of dictionary_learning 0.1.0 that hsg reads, and their
inference maths (nn.Linear weights are [out, in], so W_enc = encoder.weight.T):

    AutoEncoder          z = ReLU((x - bias) @ W_enc + b_enc),   x_hat = z @ W_dec + bias
    AutoEncoderTopK      z = top-k of ReLU((x - b_dec) @ W_enc + b_enc)
    BatchTopKSAE         z = ReLU(pre) · [ReLU(pre) > θ]   (θ global; -1 = never estimated)
    JumpReluAutoEncoder  z = ReLU(pre · [pre > θ_j]),  pre = x @ W_enc + b_enc
                         (b_dec is not subtracted: `apply_b_dec_to_input` is False when
                          loaded from ae.pt, and it is not saved)

The state dict is read with `torch.load(weights_only=True)`: tensors only, no code.
`config.json`'s `layer` numbers the submodule whose output was read in the training
script's own convention, which hsg cannot map without knowing the script, so the layer is
always given at import (the error says what the file records).
"""

from __future__ import annotations

from pathlib import Path

import torch

from hsg.sae.interop import (
    ForeignSAE,
    InteropError,
    check_shapes,
    dtype_name,
    fold_input_bias,
    read_json,
    sha256_file,
)

WEIGHTS_FILE = "ae.pt"
CFG_FILE = "config.json"
_BY_TRAINER = {
    "StandardTrainer": "AutoEncoder",
    "StandardTrainerAprilUpdate": "AutoEncoder",
    "TopKTrainer": "AutoEncoderTopK",
    "BatchTopKTrainer": "BatchTopKSAE",
    "JumpReluTrainer": "JumpReluAutoEncoder",
}
_TOPK_KEYS = {"k", "threshold", "encoder.weight", "encoder.bias", "decoder.weight", "b_dec"}
_KEYS = {
    "AutoEncoder": {"bias", "encoder.weight", "encoder.bias", "decoder.weight"},
    "AutoEncoderTopK": _TOPK_KEYS,
    "BatchTopKSAE": _TOPK_KEYS,
    "JumpReluAutoEncoder": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
}


def read_dictionary_learning(path: Path) -> ForeignSAE:
    """Read a dictionary_learning trainer directory (or its ae.pt) into hsg's form."""
    directory = path.parent if path.is_file() else path
    if not directory.is_dir():
        raise InteropError(f"dictionary_learning SAE directory not found: {directory}")
    ae_path, cfg_path = directory / WEIGHTS_FILE, directory / CFG_FILE
    conf = read_json(cfg_path)
    if not ae_path.is_file():
        raise InteropError(f"missing file: {ae_path}")
    trainer = conf.get("trainer", conf)
    if not isinstance(trainer, dict):
        raise InteropError(f"{cfg_path}: 'trainer' is not an object")
    cls = trainer.get("dict_class") or _BY_TRAINER.get(str(trainer.get("trainer_class")))
    if cls not in _KEYS:
        raise InteropError(
            f"{cfg_path}: dictionary class {cls!r} (trainer {trainer.get('trainer_class')!r}) "
            f"is not supported (supported: {', '.join(_KEYS)})"
        )
    try:
        state = torch.load(ae_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with code, a truncated file, not a zip
        raise InteropError(f"cannot read {ae_path} as a state dict of tensors: {exc}") from exc
    if not isinstance(state, dict) or set(state) != _KEYS[cls]:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise InteropError(
            f"{ae_path}: tensors {found} do not match a {cls} (expected {sorted(_KEYS[cls])})"
        )
    weight = state["W_enc"] if cls == "JumpReluAutoEncoder" else state["encoder.weight"]
    dtype = dtype_name(weight.dtype, str(ae_path))
    s = {name: value.to(torch.float64) for name, value in state.items()}
    rewrites: list[str] = []
    k = None
    if cls == "JumpReluAutoEncoder":
        t = {name: s[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
        d_in, d_sae = t["W_enc"].shape
        check_shapes(t, d_in, d_sae, str(ae_path))
        fold_input_bias(t)
        rewrites.append("b_enc += b_dec @ W_enc (JumpReluAutoEncoder does not subtract b_dec)")
        t["theta"] = s["threshold"]
        if t["theta"].shape != (d_sae,):
            raise InteropError(f"{ae_path}: threshold has shape {list(t['theta'].shape)}")
        arch = "jumprelu"
    else:
        t = {
            "W_enc": s["encoder.weight"].t().contiguous(),
            "b_enc": s["encoder.bias"],
            "W_dec": s["decoder.weight"].t().contiguous(),
            "b_dec": s["bias"] if cls == "AutoEncoder" else s["b_dec"],
        }
        d_in, d_sae = t["W_enc"].shape
        check_shapes(t, d_in, d_sae, str(ae_path))
        arch = {"AutoEncoder": "relu", "AutoEncoderTopK": "topk"}.get(cls, "batchtopk")
        if arch != "relu":
            k = int(state["k"].item())
        if arch == "batchtopk":
            t["theta"] = s["threshold"].reshape(())
            if float(t["theta"]) < 0:
                rewrites.append("threshold < 0 (never estimated) → 0: plain ReLU, as the library")
    layer, submodule = trainer.get("layer"), trainer.get("submodule_name")
    note = (
        f"config.json records layer {layer!r}, submodule {submodule!r} in the training "
        "script's numbering; a block's output counted from 0 as L is hsg layer L + 1"
        if layer is not None or submodule is not None
        else "config.json records no layer"
    )
    return ForeignSAE(
        format="dictionary-learning",
        path=directory,
        architecture=arch,
        d_in=int(d_in),
        d_sae=int(d_sae),
        tensors=t,
        dtype=dtype,
        k=k,
        model_id=trainer.get("lm_name") or None,
        layer=None,
        layer_note=note,
        rewrites=rewrites,
        source_config=conf,
        files={CFG_FILE: sha256_file(cfg_path), WEIGHTS_FILE: sha256_file(ae_path)},
    )
