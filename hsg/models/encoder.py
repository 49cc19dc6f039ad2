"""Loading an NT checkpoint and turning sequences into hidden states of one layer.

This is the interface the rest of hsg codes against::

    enc = load_encoder("path/to/nucleotide-transformer-v2-50m-multi-species")
    out = enc.embed(["ACGT…", …], layer=6, names=["chr1:0-100(+)", …])
    out.hidden[out.content_mask]          # one row per nucleotide token, <cls>/pad excluded

Layer numbering (one convention for the whole project): 0 = embeddings output, i = raw
output of block i, for i in 1..num_layers; negative indices count from the end. HF's
``last_hidden_state`` (and the last entry of its ``hidden_states``) additionally applies
``emb_layer_norm_after``; ask for it with ``layer=-1, final_norm=True``.

Batches run under ``torch.inference_mode()``, on the GPU in bfloat16 when there is one and
on the CPU in float32 otherwise; what comes back is always float32 on the CPU. On the CPU
the linear layers run through oneDNN with pre-packed weights (`hsg.models.kernels`; equal
to torch's plain layers to ~1e-6 relative, ``kernels="plain"`` to opt out).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from hsg.models.checkpoint import backbone_state, read_weights, sha256_of, weight_files
from hsg.models.config import NTConfig
from hsg.models.errors import ModelNotFoundError
from hsg.models.kernels import onednn_supported, use_onednn
from hsg.models.nucleotide_transformer import NucleotideTransformer
from hsg.models.tokenizer import NucleotideTokenizer, TokenizedSequence, default_names

KERNELS = ("auto", "plain", "onednn")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


@dataclass
class EncodedBatch:
    """Hidden states of one layer for a batch, with everything needed to read them.

    Rows are sequences (or windows of them, see ``source_index``); columns are token
    positions: ``<cls>`` at 0, content tokens, then right padding. Pad rows of ``hidden`` are
    zero. ``tokens``/``offsets`` list the content tokens only, in order, with base spans in
    the original sequence; ``hidden[i][content_mask[i]]`` lines up with ``tokens[i]``.
    """

    hidden: torch.Tensor  # float32 [B, T, d], CPU
    input_ids: torch.Tensor  # int64 [B, T]
    attention_mask: torch.Tensor  # bool [B, T]; True at <cls> and content tokens
    content_mask: torch.Tensor  # bool [B, T]; True at content tokens only
    tokens: list[list[str]]
    offsets: list[list[tuple[int, int]]]
    names: list[str]
    layer: int
    final_norm: bool = False
    source_index: list[int] = field(default_factory=list)  # row -> index of input sequence
    window_start: list[int] = field(default_factory=list)  # row -> first base of its window

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def content(self, row: int) -> torch.Tensor:
        """[n_tokens, d] hidden states of the content tokens of one row."""
        return self.hidden[row][self.content_mask[row]]


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r} (expected one of {sorted(_DTYPES)})") from None


def resolve_kernels(kernels: str | None, device: torch.device, dtype: torch.dtype) -> str:
    """``plain`` (torch's own layers) or ``onednn`` (`hsg.models.kernels`) for this run.

    ``auto`` (the default) takes oneDNN wherever it runs: on the CPU, float32 or (with the
    instructions) bfloat16. ``HSG_ENCODER_KERNELS=plain`` turns it off for a whole process.
    """
    kernels = (kernels or "auto").lower()
    if kernels == "auto":
        kernels = os.environ.get("HSG_ENCODER_KERNELS", "auto").lower() or "auto"
    if kernels not in KERNELS:
        raise ValueError(f"unknown encoder kernels {kernels!r} (expected one of {KERNELS})")
    supported = onednn_supported(device, dtype)
    if kernels == "onednn" and not supported:
        raise ValueError(f"oneDNN kernels do not run {dtype} on {device} on this machine")
    if kernels == "auto":
        return "onednn" if supported else "plain"
    return kernels


def resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_device(value: str | None) -> str:
    """A device name a user typed, checked against this machine: ``None``/``auto`` become the
    default device, a typo or a GPU the machine lacks is a ValueError naming the value."""
    if value is None or value == "auto":
        return str(resolve_device(None))
    try:
        device = resolve_device(value)
    except RuntimeError as exc:
        raise ValueError(f"{value!r} is not a torch device (try cpu or cuda)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{value!r}: CUDA is not available on this machine; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{value!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return value


class Encoder:
    """A loaded NT backbone plus its tokenizer; see the module docstring for conventions."""

    def __init__(
        self,
        model: NucleotideTransformer,
        tokenizer: NucleotideTokenizer,
        model_id: str,
        weight_paths: Sequence[Path] = (),
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        kernels: str = "auto",
    ):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.config: NTConfig = model.config
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.model.requires_grad_(False)
        self.kernels = resolve_kernels(kernels, self.device, self.dtype)
        if self.kernels == "onednn":
            use_onednn(self.model)
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.weight_paths = list(weight_paths)

    def __repr__(self) -> str:
        return (
            f"Encoder({self.model_id!r}, version={self.version}, layers={self.num_layers}, "
            f"hidden={self.hidden_size}, device={self.device}, dtype={self.dtype}, "
            f"kernels={self.kernels})"
        )

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def max_tokens(self) -> int:
        return self.tokenizer.max_tokens

    @cached_property
    def checkpoint_hash(self) -> str:
        """SHA-256 of the weight file(s), computed on first use (large files take seconds)."""
        if not self.weight_paths:
            return "unsaved"
        return sha256_of(self.weight_paths)

    # ------------------------------------------------------------------ encoding

    def encode(
        self, sequences: Sequence[str], names: Sequence[str] | None = None, window: bool = False
    ) -> list[TokenizedSequence]:
        return self.tokenizer.encode_batch(sequences, names, window=window)

    def embed(
        self,
        sequences: Sequence[str],
        layer: int,
        names: Sequence[str] | None = None,
        *,
        final_norm: bool = False,
        window: bool = False,
    ) -> EncodedBatch:
        """Hidden state ``layer`` of every sequence, in one forward pass.

        Sequences longer than ``max_tokens`` raise `SequenceTooLongError` unless ``window``
        is set, in which case they are cut into windows (one row each, see
        ``source_index``/``window_start``). Use `iter_embed` for inputs that do not fit in
        one batch.
        """
        layer = self.model.check_layer(layer)
        if isinstance(sequences, str):
            raise TypeError("embed() takes a list of sequences, not a single string")
        names = default_names(len(sequences)) if names is None else list(names)
        if len(names) != len(sequences):
            raise ValueError(f"{len(names)} names for {len(sequences)} sequences")
        rows: list[TokenizedSequence] = []
        source: list[int] = []
        for i, (seq, name) in enumerate(zip(sequences, names, strict=True)):
            encoded = (
                self.tokenizer.encode_windows(seq, name)
                if window
                else [self.tokenizer.encode(seq, name)]
            )
            rows.extend(encoded)
            source.extend([i] * len(encoded))
        return self.embed_tokenized(rows, layer, final_norm=final_norm, source_index=source)

    def embed_tokenized(
        self,
        rows: Sequence[TokenizedSequence],
        layer: int,
        *,
        final_norm: bool = False,
        source_index: Sequence[int] | None = None,
    ) -> EncodedBatch:
        """Like `embed` for already tokenized rows (lets callers plan batches by length)."""
        layer = self.model.check_layer(layer)
        ids, mask = self.tokenizer.pad(rows)
        input_ids = torch.tensor(ids, dtype=torch.long)
        attention_mask = torch.tensor(mask, dtype=torch.bool)
        content_mask = attention_mask.clone()
        content_mask[:, 0] = False
        with torch.inference_mode():
            hidden = self.model(
                input_ids.to(self.device),
                attention_mask.to(self.device),
                layer=layer,
                final_norm=final_norm,
            )
            hidden = hidden.float().cpu()
            hidden[~attention_mask] = 0.0
        return EncodedBatch(
            hidden=hidden,
            input_ids=input_ids,
            attention_mask=attention_mask,
            content_mask=content_mask,
            tokens=[r.tokens for r in rows],
            offsets=[r.offsets for r in rows],
            names=[r.name for r in rows],
            layer=layer,
            final_norm=final_norm,
            source_index=list(range(len(rows))) if source_index is None else list(source_index),
            window_start=[r.window_start for r in rows],
        )

    def iter_embed(
        self,
        sequences: Iterable[str],
        layer: int,
        names: Iterable[str] | None = None,
        *,
        batch_size: int = 32,
        final_norm: bool = False,
        window: bool = False,
    ) -> Iterator[EncodedBatch]:
        """`embed` over consecutive batches of ``batch_size`` input sequences, lazily.

        ``source_index`` of each batch counts from the start of the whole input.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        layer = self.model.check_layer(layer)
        seqs = iter(sequences)
        name_iter = iter(names) if names is not None else None
        start = 0
        while True:
            chunk = [s for _, s in zip(range(batch_size), seqs, strict=False)]
            if not chunk:
                return
            if name_iter is None:
                chunk_names = [f"#{start + j}" for j in range(len(chunk))]
            else:
                chunk_names = [n for _, n in zip(range(len(chunk)), name_iter, strict=False)]
                if len(chunk_names) != len(chunk):
                    raise ValueError("fewer names than sequences")
            batch = self.embed(chunk, layer, chunk_names, final_norm=final_norm, window=window)
            batch.source_index = [start + i for i in batch.source_index]
            yield batch
            start += len(chunk)

    def forward_from_layer(
        self,
        hidden: torch.Tensor,
        layer: int,
        attention_mask: torch.Tensor,
        *,
        to_layer: int | None = None,
        final_norm: bool = False,
    ) -> torch.Tensor:
        """Continue the forward pass from hidden state ``layer`` to ``to_layer`` (default last).

        For steering: edit ``out.hidden`` of layer i, then run the rest of the model on it.
        Takes and returns float32 CPU tensors like `embed` (computes on the encoder's device
        and dtype); pad rows of the result are zero.
        """
        start = self.model.check_layer(layer)
        stop = self.num_layers if to_layer is None else self.model.check_layer(to_layer)
        if stop < start:
            raise ValueError(f"to_layer {stop} is before layer {start}")
        if final_norm and stop != self.num_layers:
            raise ValueError(f"final_norm applies to the last layer ({self.num_layers}) only")
        mask = attention_mask.bool()
        with torch.inference_mode():
            h = hidden.to(device=self.device, dtype=self.dtype)
            m = mask.to(self.device)
            h = self.model.run_blocks(h, m, start, stop)
            if final_norm:
                h = self.model.encoder.emb_layer_norm_after(h)
            out = h.float().cpu()
            out[~mask.cpu()] = 0.0
        return out


# ---------------------------------------------------------------------- loading


def hf_cache_dirs() -> list[Path]:
    """Where a hub snapshot may already be on disk (nothing is ever downloaded)."""
    dirs = []
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            dirs.append(Path(os.environ[var]).expanduser())
    hf_home = os.environ.get("HF_HOME")
    home = Path(hf_home).expanduser() if hf_home else Path.home() / ".cache" / "huggingface"
    dirs.append(home / "hub")
    return list(dict.fromkeys(dirs))


def _cached_snapshot(hub_id: str) -> Path | None:
    for cache in hf_cache_dirs():
        repo = cache / ("models--" + hub_id.replace("/", "--"))
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        ref = repo / "refs" / "main"
        if ref.is_file():
            candidate = snapshots / ref.read_text().strip()
            if (candidate / "config.json").is_file():
                return candidate
        for candidate in sorted(snapshots.iterdir()):
            if (candidate / "config.json").is_file():
                return candidate
    return None


def resolve_model_dir(path_or_id: str | Path) -> tuple[Path, str]:
    """(directory, model id) for a local directory or an already-cached hub id.

    The model id is the hub id when resolved from the cache, else the directory name.
    """
    text = str(path_or_id)
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve(), path.resolve().name
    if path.exists():
        raise ModelNotFoundError(
            f"{text}: is a file; pass the model directory (config.json + weights)"
        )
    if _HUB_ID.match(text):
        snapshot = _cached_snapshot(text)
        if snapshot is not None:
            return snapshot, text
        looked = ", ".join(str(d) for d in hf_cache_dirs())
        raise ModelNotFoundError(
            f"model {text!r} is not a local directory and is not in the Hugging Face cache "
            f"({looked}); hsg works offline and never downloads weights: fetch it where there "
            f"is network (e.g. `hf download {text}`) and pass the directory"
        )
    raise ModelNotFoundError(f"no model directory at {text!r}")


def build_model(
    config: NTConfig, state: dict[str, torch.Tensor] | None = None
) -> NucleotideTransformer:
    """The backbone for ``config``; with ``state``, weights are assigned without a random init."""
    if state is None:
        return NucleotideTransformer(config)
    with torch.device("meta"):
        model = NucleotideTransformer(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def load_encoder(
    path_or_id: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    kernels: str = "auto",
) -> Encoder:
    """Load an NT v1/v2 checkpoint from an HF-format directory (or a cached hub id).

    The directory holds ``config.json``, the weights (``model.safetensors`` or
    ``pytorch_model.bin``, possibly sharded) and optionally the tokenizer files. Nothing is
    downloaded and no hub code is run (never ``trust_remote_code``). ``kernels``: see
    `resolve_kernels` (oneDNN on the CPU by default).
    """
    model_dir, model_id = resolve_model_dir(path_or_id)
    config = NTConfig.from_model_dir(model_dir)
    tokenizer = NucleotideTokenizer.from_pretrained(model_dir, version=config.version)
    if tokenizer.max_tokens > config.max_tokens:
        tokenizer = NucleotideTokenizer(config.version, max_tokens=config.max_tokens)
    files = weight_files(model_dir)
    with torch.device("meta"):
        expected = {k: v.shape for k, v in NucleotideTransformer(config).state_dict().items()}
    state = backbone_state(read_weights(files), expected, config, str(files[0]))
    dev = resolve_device(device)
    target = resolve_dtype(dtype, dev)
    state = {k: v.to(target) for k, v in state.items()}
    return Encoder(build_model(config, state), tokenizer, model_id, files, dev, target, kernels)
