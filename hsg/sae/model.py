"""The sparse autoencoder, with verified save/load, for every architecture of the registry.

Shapes follow the math, not `nn.Linear`: `W_enc` is [d_in, d_sae], `W_dec` is [d_sae, d_in],
so `z = act((x - b_dec) @ W_enc + b_enc)` and `x_hat = z @ W_dec + b_dec`. What differs
between architectures (`act`, the initial encoder scale, whether the loss has the L1 term,
valid configs, extra tensors) lives in `hsg.sae.architectures`: ReLU (the study's), TopK,
BatchTopK and JumpReLU. Each row of `W_dec`
is one dictionary atom (a "decoder column" in the d_in x d_sae convention of the papers) and
is kept at unit L2 norm, so a latent's activation is directly the length of its atom in the
reconstruction and the L1 penalty cannot be dodged by shrinking z while growing the atom.

Loss normalisation (the same as the study's code, so its λ values carry over when the input
scale s is 1, i.e. `--no-normalize` or an SAE saved before normalisation existed):

    MSE = mean over tokens n of ( sum over d of (x_hat[n,d] - x[n,d])^2 ) / d_in
        = the element-wise mean squared error;
    L1  = mean over tokens n of  sum over latents j of |z[n,j]|;
    loss = MSE + λ(step) * L1,   λ(step) = l1_coefficient * min(1, step / l1_warmup_steps).

Both terms depend on the scale of the activations, so training normalises them: the loss is
that of the SAE applied to s·x, with s (`SAEConfig.input_scale`) chosen so that the mean
squared distance of a token to the data's mean is d_in (each dimension has variance 1 on
average). In those units the MSE term is about the fraction of variance left unexplained,
whatever the model or layer. The weights themselves stay in raw units: the SAE applied to
s·x has biases s·b and the same W_enc, W_dec (every activation here is positively
homogeneous), so the loss is computed from the raw forward pass as

    loss = s² MSE + λ s L1          (relu)
    loss = s² MSE + λ₀ L0           (jumprelu; L0 through its straight-through estimator)
    loss = s² MSE (+ α AuxK)        (topk, batchtopk; AuxK is scale-free)

and training gives the biases the learning rate lr / s (Adam moves a parameter by about lr
per step whatever its gradient's size, and these biases are s times smaller in raw units).
Architectures whose spec has neither penalty (TopK) train on the MSE alone (+ AuxK), and
L1 is only reported.
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
from hsg.sae.config import UNSAVED_CHECKPOINT, ConfigError, SAEConfig

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
    """One batch's objective and its pieces, so training and logging agree on the numbers.

    `mse` and `l1` are in raw units (as reported); `loss` is the normalised objective;
    `l0` is the penalty's differentiable L0 and `aux` the AuxK loss, where used.
    """

    loss: torch.Tensor
    mse: torch.Tensor
    l1: torch.Tensor
    x_hat: torch.Tensor
    z: torch.Tensor
    l0: torch.Tensor | None = None
    aux: torch.Tensor | None = None


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
        for extra in cfg.spec.extra_tensors:
            value = torch.full(extra.shape(cfg), extra.init(cfg), dtype=torch.float64).to(dtype)
            self._set_extra(extra.name, value, extra.trainable)
        if device is not None:
            self.to(device)

    def _set_extra(self, name: str, value: torch.Tensor, trainable: bool) -> None:
        if trainable:
            setattr(self, name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    @property
    def tensor_names(self) -> tuple[str, ...]:
        """The names of every saved tensor: the four parameters, then the extras."""
        return PARAM_NAMES + tuple(e.name for e in self.spec.extra_tensors)

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """The architecture's extra tensors by name (empty for relu and topk)."""
        return {e.name: getattr(self, e.name) for e in self.spec.extra_tensors}

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
        return self.spec.activate(self.encode_pre(x), self.cfg, **self.extra_tensors())

    def encode_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pre-activations, training-time latents); may update running state (BatchTopK)."""
        pre = self.encode_pre(x)
        act = self.spec.train_activate or self.spec.activate
        return pre, act(pre, self.cfg, **self.extra_tensors())

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
            return spec.activate(self.encode_pre(x), self.cfg, **self.extra_tensors())[..., j]
        return spec.encode_feature(self, x, j)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction `z @ W_dec + b_dec`, shape [..., d_in] (the bias is included)."""
        return z.to(device=self.device, dtype=self.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        z = self.encode(x)
        return self.decode(z), z

    def loss(
        self,
        x: torch.Tensor,
        l1_coefficient: float,
        *,
        l0_coefficient: float = 0.0,
        dead: torch.Tensor | None = None,
    ) -> LossParts:
        """The training objective with the normalisation stated in the module docstring.

        `dead` (bool [d_sae]) marks the latents that get the AuxK loss, for architectures
        that use it; the residual they reconstruct is detached, so only they learn from it.
        """
        x = x.to(device=self.device, dtype=self.dtype)
        spec, cfg, s = self.spec, self.cfg, self.cfg.scale
        pre, z = self.encode_train(x)
        x_hat = self.decode(z)
        mse = (x_hat - x).pow(2).sum(dim=-1).div(cfg.d_in).mean()
        l1 = z.abs().sum(dim=-1).mean()
        loss = mse * (s * s) if s != 1.0 else mse
        l0 = aux = None
        if spec.uses_l1:
            loss = loss + l1_coefficient * s * l1 if s != 1.0 else loss + l1_coefficient * l1
        if spec.l0_penalty is not None:
            l0 = spec.l0_penalty(pre, cfg, **self.extra_tensors())
            loss = loss + l0_coefficient * l0
        if spec.uses_auxk and dead is not None and cfg.auxk_coefficient > 0:
            aux = self._auxk(x - x_hat.detach(), pre, dead)
            if aux is not None:
                loss = loss + cfg.auxk_coefficient * aux
        return LossParts(loss=loss, mse=mse, l1=l1, x_hat=x_hat, z=z, l0=l0, aux=aux)

    def _auxk(self, residual: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor):
        """AuxK: the top-k_aux dead latents (k_aux = d_in // 2) reconstruct the residual.

        Returned relative to the residual's energy, sum ||e_hat - e||^2 / sum ||e||^2, so its
        weight means the same whatever the scale and the current reconstruction error.
        """
        idx = dead.nonzero().squeeze(-1)
        if idx.numel() == 0:
            return None
        k_aux = min(idx.numel(), max(1, self.cfg.d_in // 2))
        sub = pre.index_select(-1, idx)  # the dead latents' pre-activations only
        values, indices = sub.topk(k_aux, dim=-1, sorted=False)
        z_aux = torch.zeros_like(sub).scatter(-1, indices, torch.relu(values))
        e_hat = z_aux @ self.W_dec.index_select(0, idx)
        energy = residual.pow(2).sum().clamp_min(torch.finfo(self.dtype).tiny)
        return (e_hat - residual).pow(2).sum() / energy

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
            name: getattr(self, name).detach().to("cpu").contiguous() for name in self.tensor_names
        }
        return st_save(tensors)

    def _weights_key(self) -> tuple[tuple[int, int], ...]:
        # Tensor._version counts in-place writes, so (storage, version) changes whenever the
        # weights can have changed: optimizer steps, load_weights_, .to(device).
        return tuple(
            (getattr(self, n).data_ptr(), getattr(self, n)._version) for n in self.tensor_names
        )

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
        """Stable identifier: `ckpt-<checkpoint sha256[:12]>/L<layer>/<arch>-<d_sae>-<sha256[:8]>`.

        The encoder is named by the hash of its weight files, not by its directory's name
        (`cfg.model_id`, kept as a readable label): renaming or moving a model directory
        changes no id, and a directory called `model` does not give ids `model/L1/…`. Without
        a recorded checkpoint hash, and for SAEs saved before this scheme (`cfg.id_from ==
        "model_id"`, whose ids graphs already hold), it is `<model_id>/L<layer>/…`.
        The last hash is of the weight file, so two SAEs with the same shape and provenance
        but different weights never share an id, and the id of a loaded SAE never changes.
        """
        model = encoder_key(self.cfg)
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
        expected.update({e.name: tuple(e.shape(cfg)) for e in cfg.spec.extra_tensors})
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
        for extra in cfg.spec.extra_tensors:
            sae._set_extra(extra.name, tensors[extra.name], extra.trainable)
        sae.source = weights_path
        sae.__dict__["_hash_cache"] = (sae._weights_key(), digest)
        if device is not None:
            sae.to(device)
        return sae

    def load_weights_(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy weights in place (keeps Parameter identity, so an optimizer stays attached)."""
        with torch.no_grad():
            for name in self.tensor_names:
                getattr(self, name).copy_(tensors[name])

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Detached CPU copies of every saved tensor (parameters and extras), by name."""
        return {name: getattr(self, name).detach().to("cpu").clone() for name in self.tensor_names}


def encoder_key(cfg: SAEConfig) -> str:
    """The first part of `sae_id`: what names the encoder the SAE reads (see `sae_id`)."""
    ckpt = cfg.encoder_checkpoint_hash
    if cfg.id_from == "checkpoint" and ckpt and ckpt != UNSAVED_CHECKPOINT:
        return f"ckpt-{ckpt[:12]}"
    return cfg.model_id or "unknown-model"


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
