"""The sparse autoencoder, with verified save/load, for every architecture of the registry.

Shapes follow the math, not `nn.Linear`: `W_enc` is [d_in, d_sae], `W_dec` is [d_sae, d_in],
so `z = act((x - b_dec) @ W_enc + b_enc)` and `x_hat = z @ W_dec + b_dec`. What differs
between architectures (`act`, the initial encoder scale, whether the loss has the L1 term,
valid configs) lives in `hsg.sae.architectures`: ReLU (the study's) and TopK. Each row of `W_dec`
is one dictionary atom (a "decoder column" in the d_in x d_sae convention of the papers) and
is kept at unit L2 norm, so a latent's activation is directly the length of its atom in the
reconstruction and the L1 penalty cannot be dodged by shrinking z while growing the atom.

Loss normalisation (the same as the study's code, so its λ values carry over):

    MSE = mean over tokens n of ( sum over d of (x_hat[n,d] - x[n,d])^2 ) / d_in
        = the element-wise mean squared error;
    L1  = mean over tokens n of  sum over latents j of |z[n,j]|;
    loss = MSE + λ(step) * L1,   λ(step) = l1_coefficient * min(1, step / l1_warmup_steps).

Both terms therefore depend on the scale of the activations, and λ's meaning depends on
d_in (MSE is divided by d_in, L1 is not). Architectures whose spec has `uses_l1=False`
(TopK: sparsity is fixed by k) train on MSE alone, and L1 is only reported.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from hsg.sae.architectures import ArchitectureSpec
from hsg.sae.config import ConfigError, SAEConfig

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
PARAM_NAMES: tuple[str, ...] = ("W_enc", "b_enc", "W_dec", "b_dec")

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class SAELoadError(ValueError):
    """An SAE directory that cannot be loaded as written; the message names the file."""


@dataclass
class LossParts:
    """One batch's objective and its pieces, so training and logging agree on the numbers."""

    loss: torch.Tensor
    mse: torch.Tensor
    l1: torch.Tensor
    x_hat: torch.Tensor
    z: torch.Tensor


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH_DTYPES[name]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SparseAutoencoder(nn.Module):
    """A one-layer sparse autoencoder over one layer of one encoder model.

    The pre-encoder bias is `b_dec` itself (subtracted before encoding, added back after
    decoding): the SAE then learns the data's centre once, and the latents describe
    deviations from it. Interventions must decode with `decode`, which adds `b_dec`.
    """

    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.source: Path | None = None  # the weights file this SAE was loaded from
        dtype = torch_dtype(cfg.dtype)
        # Initialise in float64 on CPU from the config's seed so the same config gives the same
        # SAE on any device and in any dtype. Tied init (W_enc ∝ W_dec^T) starts every latent
        # as a matched filter for its own atom, which shortens the early, wasteful phase.
        gen = torch.Generator().manual_seed(cfg.seed)
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen, dtype=torch.float64)
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
        # The architecture scales the tied encoder (ReLU: so that the first reconstructions
        # are about the right size rather than several-fold too large).
        scale = cfg.spec.init_scale(cfg)
        self.W_dec = nn.Parameter(w_dec.to(dtype))
        self.W_enc = nn.Parameter((w_dec.t() * scale).contiguous().to(dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))
        if device is not None:
            self.to(device)

    # ------------------------------------------------------------------ forward
    @property
    def spec(self) -> ArchitectureSpec:
        """The architecture's spec (activation, init scale, loss terms)."""
        return self.cfg.spec

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    def check_input(self, d: int, what: str = "encoder layer") -> None:
        """Fail early, naming the SAE, when it is fed activations of the wrong width."""
        if d != self.cfg.d_in:
            where = f" ({self.source})" if self.source is not None else ""
            raise ValueError(
                f"SAE {self.sae_id}{where} expects d_in={self.cfg.d_in}, "
                f"but the {what} has width {d}"
            )

    def encode_pre(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations `(x - b_dec) @ W_enc + b_enc`, shape [..., d_sae]."""
        self.check_input(x.shape[-1], "input")
        x = x.to(device=self.device, dtype=self.dtype)
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents z, shape [..., d_sae]; non-negative, and at most k non-zero for TopK."""
        return self.spec.activate(self.encode_pre(x), self.cfg)

    def encode_feature(self, x: torch.Tensor, j: int) -> torch.Tensor:
        """Latent j alone, shape [...]: equal to `encode(x)[..., j]`, cheaper where it can be.

        ReLU computes only column j of the encoder; TopK needs every pre-activation to know
        whether j is among the k selected, and so costs a full `encode`.
        """
        self.check_input(x.shape[-1], "input")
        if not 0 <= j < self.cfg.d_sae:
            raise IndexError(
                f"feature {j} out of range for SAE {self.sae_id} (d_sae={self.cfg.d_sae})"
            )
        x = x.to(device=self.device, dtype=self.dtype)
        spec = self.spec
        if spec.encode_feature is None:
            return spec.activate(self.encode_pre(x), self.cfg)[..., j]
        return spec.encode_feature(self, x, j)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction `z @ W_dec + b_dec`, shape [..., d_in] (the bias is included)."""
        return z.to(device=self.device, dtype=self.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        z = self.encode(x)
        return self.decode(z), z

    def loss(self, x: torch.Tensor, l1_coefficient: float) -> LossParts:
        """The training objective with the normalisation stated in the module docstring."""
        x = x.to(device=self.device, dtype=self.dtype)
        x_hat, z = self(x)
        mse = (x_hat - x).pow(2).sum(dim=-1).div(self.cfg.d_in).mean()
        l1 = z.abs().sum(dim=-1).mean()
        loss = mse + l1_coefficient * l1 if self.spec.uses_l1 else mse
        return LossParts(loss=loss, mse=mse, l1=l1, x_hat=x_hat, z=z)

    # ------------------------------------------------------------------ decoder constraint
    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Put every atom (row of W_dec) back on the unit sphere after an optimizer step."""
        norms = self.W_dec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(self.dtype).tiny)
        self.W_dec.div_(norms)

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Project out the gradient component along each atom before the optimizer step.

        Along the atom the gradient only changes the norm, which `normalize_decoder_` undoes
        anyway; left in, it would feed Adam's moment estimates with a direction that never
        moves the model.
        """
        grad = self.W_dec.grad
        if grad is None:
            return
        parallel = (grad * self.W_dec).sum(dim=1, keepdim=True)
        grad.sub_(parallel * self.W_dec)

    # ------------------------------------------------------------------ identity
    def weights_bytes(self) -> bytes:
        """The exact bytes `save` writes to `sae.safetensors` (deterministic for given weights)."""
        tensors = {
            name: getattr(self, name).detach().to("cpu").contiguous() for name in PARAM_NAMES
        }
        return st_save(tensors)

    def _weights_key(self) -> tuple[tuple[int, int], ...]:
        # Tensor._version counts in-place writes, so (storage, version) changes whenever the
        # weights can have changed: optimizer steps, load_weights_, .to(device).
        return tuple((getattr(self, n).data_ptr(), getattr(self, n)._version) for n in PARAM_NAMES)

    def weights_sha256(self) -> str:
        """Content hash of the current weights (that of `sae.safetensors` once saved)."""
        key = self._weights_key()
        cached = self.__dict__.get("_hash_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        digest = sha256_bytes(self.weights_bytes())
        self.__dict__["_hash_cache"] = (key, digest)
        return digest

    @property
    def sae_id(self) -> str:
        """Stable identifier: `<model_id>/L<layer>/<arch>-<d_sae>-<sha256[:8]>`.

        The hash is of the weight file, so two SAEs with the same shape and provenance but
        different weights never share an id, and the id of a loaded SAE never changes.
        """
        model = self.cfg.model_id or "unknown-model"
        layer = "?" if self.cfg.layer is None else str(self.cfg.layer)
        arch = self.cfg.architecture
        return f"{model}/L{layer}/{arch}-{self.cfg.d_sae}-{self.weights_sha256()[:8]}"

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write `cfg.json` and `sae.safetensors` into `directory`; returns the directory.

        The weights are written first and the config (which carries their hash) last, both
        through a rename, so a crash never leaves a config that vouches for other weights.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        data = self.weights_bytes()
        digest = sha256_bytes(data)
        _atomic_write(out / WEIGHTS_FILE, data)
        self.cfg = self.cfg.replace(weights_sha256=digest)
        _atomic_write(out / CFG_FILE, (self.cfg.to_json() + "\n").encode())
        self.source = out / WEIGHTS_FILE
        self.__dict__["_hash_cache"] = (self._weights_key(), digest)
        return out

    @classmethod
    def load(
        cls, directory: str | Path, device: torch.device | str | None = None
    ) -> SparseAutoencoder:
        """Load an SAE written by `save`, bit for bit, after checking hash and shapes.

        `directory` may also be the path of its `cfg.json` or `sae.safetensors`.
        """
        path = Path(directory)
        if path.is_file():
            path = path.parent
        cfg_path, weights_path = path / CFG_FILE, path / WEIGHTS_FILE
        if not path.is_dir():
            raise SAELoadError(f"SAE directory not found: {path}")
        for p in (cfg_path, weights_path):
            if not p.is_file():
                raise SAELoadError(f"missing SAE file: {p}")
        try:
            cfg = SAEConfig.from_json(cfg_path.read_text())
        except (ConfigError, UnicodeDecodeError) as exc:
            raise SAELoadError(f"invalid SAE config {cfg_path}: {exc}") from exc
        if cfg.weights_sha256 is None:
            raise SAELoadError(f"{cfg_path} records no weights_sha256; re-save the SAE")
        data = weights_path.read_bytes()
        digest = sha256_bytes(data)
        if digest != cfg.weights_sha256:
            raise SAELoadError(
                f"hash mismatch for {weights_path}: sha256 {digest[:16]}… but {CFG_FILE} "
                f"records {cfg.weights_sha256[:16]}… (file changed or belongs to another SAE)"
            )
        try:
            tensors = st_load(data)
        except Exception as exc:  # safetensors raises its own error types
            raise SAELoadError(f"cannot read {weights_path}: {exc}") from exc
        expected = {
            "W_enc": (cfg.d_in, cfg.d_sae),
            "b_enc": (cfg.d_sae,),
            "W_dec": (cfg.d_sae, cfg.d_in),
            "b_dec": (cfg.d_in,),
        }
        if set(tensors) != set(expected):
            raise SAELoadError(
                f"wrong SAE tensors in {weights_path}: found {sorted(tensors)}, "
                f"expected {sorted(expected)}"
            )
        for name, shape in expected.items():
            got = tuple(tensors[name].shape)
            if got != shape:
                raise SAELoadError(
                    f"wrong SAE shape in {weights_path}: {name} is {list(got)} but {CFG_FILE} "
                    f"(d_in={cfg.d_in}, d_sae={cfg.d_sae}) needs {list(shape)}"
                )
            if tensors[name].dtype != torch_dtype(cfg.dtype):
                raise SAELoadError(
                    f"wrong SAE dtype in {weights_path}: {name} is {tensors[name].dtype} "
                    f"but {CFG_FILE} says {cfg.dtype}"
                )
        sae = cls.__new__(cls)
        nn.Module.__init__(sae)
        sae.cfg = cfg
        for name in PARAM_NAMES:
            setattr(sae, name, nn.Parameter(tensors[name]))
        sae.source = weights_path
        sae.__dict__["_hash_cache"] = (sae._weights_key(), digest)
        if device is not None:
            sae.to(device)
        return sae

    def load_weights_(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy weights in place (keeps Parameter identity, so an optimizer stays attached)."""
        with torch.no_grad():
            for name in PARAM_NAMES:
                getattr(self, name).copy_(tensors[name])

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Detached CPU copies of the four parameters, by name."""
        return {name: getattr(self, name).detach().to("cpu").clone() for name in PARAM_NAMES}


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_cfg(directory: str | Path) -> SAEConfig:
    """The config of a saved SAE without loading or verifying its weights."""
    path = Path(directory)
    cfg_path = path if path.name == CFG_FILE else path / CFG_FILE
    if not cfg_path.is_file():
        raise SAELoadError(f"missing SAE file: {cfg_path}")
    try:
        return SAEConfig.from_json(cfg_path.read_text())
    except ConfigError as exc:
        raise SAELoadError(f"invalid SAE config {cfg_path}: {exc}") from exc


__all__ = [
    "CFG_FILE",
    "WEIGHTS_FILE",
    "LossParts",
    "SAELoadError",
    "SparseAutoencoder",
    "read_cfg",
]
