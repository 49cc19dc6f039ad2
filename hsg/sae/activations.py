"""Activation sources for SAE training: a sharded on-disk cache, and single array files.

Why a cache: the language model is by far the expensive part, so it runs once per sequence
and its layer-L activations of content tokens are written to disk in shards of at most
`shard_size` tokens. Training then streams shards, so its memory is bounded by
`shuffle_buffer_shards x shard_size` rows whatever the size of the dataset.

Cache layout (`<dir>/manifest.json` is written last; a directory without it is incomplete):

    shard-00000.safetensors   activations [n, d_in], sequence int64 [n], position int32 [n]
    ...
    manifest.json             model id/version/checkpoint hash, layer, hook, d_in, n_tokens,
                              n_sequences, sequence_ids, tokens per sequence, shard list,
                              and a fingerprint of the input records (to reuse the cache)

`sequence[i]` is the index in `sequence_ids` of the sequence that row i came from, and
`position[i]` its token position in the encoder's tokenisation (`<cls>` is position 0).

Train/validation are split by sequence with a seeded hash of the sequence id, so the split is
the same on every run and machine, and a sequence never has tokens on both sides.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file as np_load_file
from safetensors.numpy import save_file as np_save_file

from hsg.iterutils import batched
from hsg.sae.config import DEFAULT_HOOK, UNSAVED_CHECKPOINT

MANIFEST_FILE = "manifest.json"
SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".safetensors"
CACHE_FORMAT = "hsg-activations/1"
DEFAULT_SHARD_SIZE = 16384
CACHE_DTYPES = ("float32", "float16")


class ActivationError(ValueError):
    """Activations that cannot be read or do not fit; the message names the file."""


# --------------------------------------------------------------------------- the manifest
@dataclass
class ActivationManifest:
    """What a shard cache holds and where it came from."""

    d_in: int
    n_tokens: int
    n_sequences: int
    shard_size: int
    shards: list[dict[str, Any]]
    sequence_ids: list[str]
    sequence_tokens: list[int]
    model_id: str | None = None
    model_version: str | None = None
    layer: int | None = None
    checkpoint_hash: str | None = None
    hook: str = DEFAULT_HOOK
    include_cls: bool = False
    dtype: str = "float32"
    data_fingerprint: str | None = None
    format: str = CACHE_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def load(cls, directory: str | Path) -> ActivationManifest:
        path = Path(directory) / MANIFEST_FILE
        if not path.is_file():
            raise ActivationError(
                f"no activation cache at {directory}: missing {MANIFEST_FILE} "
                "(an interrupted caching run leaves none; run it again)"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ActivationError(f"invalid {path}: {exc}") from exc
        if data.get("format") != CACHE_FORMAT:
            raise ActivationError(f"{path}: format {data.get('format')!r} is not {CACHE_FORMAT!r}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ActivationError(f"{path}: unknown key(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ActivationError(f"{path}: {exc}") from exc

    def provenance(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "model_version": self.model_version,
            "layer": self.layer,
            "encoder_checkpoint_hash": self.checkpoint_hash,
            "hook": self.hook,
        }


# --------------------------------------------------------------------------- writing
class ShardWriter:
    """Appends per-sequence activation rows and writes shards of exactly `shard_size` rows.

    Only the rows not yet written are held in memory (at most `shard_size` plus one
    sequence), so caching a dataset of any size needs bounded memory.
    """

    def __init__(
        self, directory: str | Path, shard_size: int, d_in: int, dtype: str = "float32"
    ) -> None:
        if shard_size <= 0:
            raise ValueError(f"shard_size must be positive, got {shard_size}")
        if dtype not in CACHE_DTYPES:
            raise ValueError(f"cache dtype must be one of {CACHE_DTYPES}, got {dtype!r}")
        self.directory = Path(directory)
        self.shard_size, self.d_in, self.dtype = shard_size, d_in, dtype
        self.sequence_ids: list[str] = []
        self.sequence_tokens: list[int] = []
        self.shards: list[dict[str, Any]] = []
        self._rows: list[np.ndarray] = []
        self._seq: list[np.ndarray] = []
        self._pos: list[np.ndarray] = []
        self._pending = 0
        self.n_tokens = 0
        clear_cache_dir(self.directory)

    def add(self, seq_id: str, rows: np.ndarray, positions: np.ndarray | None = None) -> None:
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.d_in:
            raise ActivationError(
                f"sequence {seq_id}: activations of shape {rows.shape}, expected [T, {self.d_in}]"
            )
        n = rows.shape[0]
        index = len(self.sequence_ids)
        self.sequence_ids.append(str(seq_id))
        self.sequence_tokens.append(n)
        if n == 0:
            return
        if positions is None:
            positions = np.arange(n)
        self._rows.append(rows.astype(self.dtype, copy=False))
        self._seq.append(np.full(n, index, dtype=np.int64))
        self._pos.append(np.asarray(positions, dtype=np.int32))
        self._pending += n
        self.n_tokens += n
        while self._pending >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, n: int) -> None:
        rows, seq, pos = (np.concatenate(a) for a in (self._rows, self._seq, self._pos))
        name = f"{SHARD_PREFIX}{len(self.shards):05d}{SHARD_SUFFIX}"
        tensors = {
            "activations": np.ascontiguousarray(rows[:n]),
            "sequence": np.ascontiguousarray(seq[:n]),
            "position": np.ascontiguousarray(pos[:n]),
        }
        tmp = self.directory / f".{name}.tmp"
        np_save_file(tensors, str(tmp))
        os.replace(tmp, self.directory / name)
        self.shards.append({"file": name, "n_tokens": int(n)})
        rest = rows.shape[0] - n
        self._rows = [rows[n:]] if rest else []
        self._seq = [seq[n:]] if rest else []
        self._pos = [pos[n:]] if rest else []
        self._pending = rest

    def close(self, **provenance: Any) -> ActivationManifest:
        """Write the last partial shard and then the manifest, which marks the cache complete."""
        if self._pending:
            self._flush(self._pending)
        manifest = ActivationManifest(
            d_in=self.d_in,
            n_tokens=self.n_tokens,
            n_sequences=len(self.sequence_ids),
            shard_size=self.shard_size,
            shards=self.shards,
            sequence_ids=self.sequence_ids,
            sequence_tokens=self.sequence_tokens,
            dtype=self.dtype,
            **provenance,
        )
        tmp = self.directory / f".{MANIFEST_FILE}.tmp"
        tmp.write_text(manifest.to_json() + "\n")
        os.replace(tmp, self.directory / MANIFEST_FILE)
        return manifest


def clear_cache_dir(directory: Path) -> None:
    """Remove a previous cache's own files (manifest first); leave anything else alone."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / MANIFEST_FILE
    if manifest.exists():
        manifest.unlink()
    for p in directory.iterdir():
        if p.name.startswith(SHARD_PREFIX) and p.name.endswith(SHARD_SUFFIX):
            p.unlink()


class _Record(Protocol):
    id: str
    sequence: str


def _fingerprint_update(h: Any, record: _Record) -> None:
    h.update(str(record.id).encode() + b"\t" + record.sequence.encode() + b"\n")


def fingerprint_records(records: Iterable[_Record]) -> tuple[str, int]:
    """Hash of the (id, sequence) stream and its length, to reuse a cache only for same input."""
    h = hashlib.sha256()
    n = 0
    for r in records:
        _fingerprint_update(h, r)
        n += 1
    return h.hexdigest(), n


def cache_activations(
    records: Iterable[_Record],
    encoder: Any,
    layer: int,
    directory: str | Path,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int = 32,
    include_cls: bool = False,
    dtype: str = "float32",
    progress: bool = False,
    total: int | None = None,
) -> ActivationManifest:
    """Run the encoder once per sequence and write layer `layer` to a shard cache.

    `encoder` is an `hsg.models.encoder` encoder (`embed(seqs, layer, names=ids)` returning
    `hidden` [B,T,d], `content_mask` and `attention_mask`). Only content tokens are kept
    unless `include_cls`, which keeps every non-padding token.
    """
    from tqdm import tqdm

    writer = ShardWriter(directory, shard_size, int(encoder.hidden_size), dtype=dtype)
    fp = hashlib.sha256()
    bar = tqdm(total=total, unit="seq", desc=f"caching layer {layer}", disable=not progress)
    for batch in batched(records, batch_size):
        ids = [str(r.id) for r in batch]
        for r in batch:
            _fingerprint_update(fp, r)
        out = encoder.embed([r.sequence for r in batch], layer, names=ids)
        hidden = _to_numpy(out.hidden)
        mask = _to_numpy(out.attention_mask if include_cls else out.content_mask).astype(bool)
        for b, seq_id in enumerate(ids):
            positions = np.flatnonzero(mask[b])
            writer.add(seq_id, hidden[b, positions], positions)
        bar.update(len(batch))
    bar.close()
    return writer.close(
        model_id=getattr(encoder, "model_id", None),
        model_version=getattr(encoder, "version", None),
        layer=layer,
        checkpoint_hash=getattr(encoder, "checkpoint_hash", None),
        hook=getattr(encoder, "hook_convention", DEFAULT_HOOK),
        include_cls=include_cls,
        data_fingerprint=fp.hexdigest(),
    )


def _to_numpy(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().to("cpu")
        if t.dtype.is_floating_point:
            t = t.float()
        return t.numpy()
    return np.asarray(t)


def reusable_cache(
    directory: str | Path,
    *,
    data_fingerprint: str,
    model_id: str | None,
    checkpoint_hash: str | None,
    layer: int,
    include_cls: bool = False,
) -> ActivationManifest | None:
    """The existing cache's manifest if it holds exactly these activations, else None.

    The encoder is identified by its checkpoint hash: `model_id` (a directory's name, a
    label) is compared only when there is no hash to compare, so renaming or moving a model
    directory does not re-encode everything.
    """
    try:
        m = ActivationManifest.load(directory)
    except ActivationError:
        return None
    if checkpoint_hash and checkpoint_hash != UNSAVED_CHECKPOINT:
        same_encoder = m.checkpoint_hash == checkpoint_hash
    else:
        same_encoder = m.model_id == model_id and m.checkpoint_hash == checkpoint_hash
    same = (
        m.data_fingerprint == data_fingerprint
        and same_encoder
        and m.layer == layer
        and m.include_cls == include_cls
        and all((Path(directory) / s["file"]).is_file() for s in m.shards)
    )
    return m if same else None


# --------------------------------------------------------------------------- reading
@dataclass
class Shard:
    """Rows of activations and, for each row, the index of its sequence."""

    x: np.ndarray  # float32 [n, d_in]
    seq: np.ndarray  # int64 [n], index into the store's sequences


class ActivationStore:
    """A dataset of activation rows grouped into shards that fit in memory one at a time."""

    d_in: int
    n_tokens: int
    n_sequences: int
    source: str

    def __len__(self) -> int:
        return self.num_shards

    @property
    def num_shards(self) -> int:
        raise NotImplementedError

    def load_shard(self, i: int) -> Shard:
        raise NotImplementedError

    def tokens_per_sequence(self) -> np.ndarray:
        raise NotImplementedError

    def sequence_ids(self) -> Sequence[str] | None:
        """Ids used for the split hash; None means 'use the sequence index'."""
        return None

    def provenance(self) -> dict[str, Any]:
        return {}

    def validation_mask(self, fraction: float, seed: int) -> np.ndarray:
        """Boolean per sequence: True where the sequence belongs to the validation split."""
        ids = self.sequence_ids()
        if ids is not None:
            return split_ids(ids, fraction, seed)
        return split_indices(self.n_sequences, fraction, seed)


class ShardCacheStore(ActivationStore):
    """A cache written by `cache_activations` / `ShardWriter`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.manifest = ActivationManifest.load(self.directory)
        self.d_in = self.manifest.d_in
        self.n_tokens = self.manifest.n_tokens
        self.n_sequences = self.manifest.n_sequences
        self.source = str(self.directory)
        for s in self.manifest.shards:
            if not (self.directory / s["file"]).is_file():
                raise ActivationError(f"missing activation shard: {self.directory / s['file']}")

    @property
    def num_shards(self) -> int:
        return len(self.manifest.shards)

    def load_shard(self, i: int) -> Shard:
        info = self.manifest.shards[i]
        path = self.directory / info["file"]
        try:
            t = np_load_file(str(path))
        except Exception as exc:
            raise ActivationError(f"cannot read activation shard {path}: {exc}") from exc
        x, seq = t.get("activations"), t.get("sequence")
        if x is None or seq is None or x.shape != (info["n_tokens"], self.d_in):
            raise ActivationError(
                f"activation shard {path} does not match {MANIFEST_FILE} "
                f"(expected [{info['n_tokens']}, {self.d_in}] activations and a sequence index)"
            )
        return Shard(x=x.astype(np.float32, copy=False), seq=seq.astype(np.int64, copy=False))

    def tokens_per_sequence(self) -> np.ndarray:
        return np.asarray(self.manifest.sequence_tokens, dtype=np.int64)

    def sequence_ids(self) -> Sequence[str]:
        return self.manifest.sequence_ids

    def provenance(self) -> dict[str, Any]:
        return self.manifest.provenance()


class ArrayStore(ActivationStore):
    """An [N, d] array (in memory or memory-mapped) cut into virtual shards.

    Without `sequence`, every row is its own sequence: a flat array carries no sequence
    structure, so the split can only be by row (documented in the CLI help).
    """

    def __init__(
        self,
        x: Any,
        *,
        sequence: np.ndarray | None = None,
        ids: Sequence[str] | None = None,
        shard_size: int = DEFAULT_SHARD_SIZE,
        source: str = "<array>",
        provenance: dict[str, Any] | None = None,
    ) -> None:
        if hasattr(x, "detach"):
            x = x.detach().to("cpu").float().numpy()
        if getattr(x, "ndim", 0) != 2:
            raise ActivationError(f"{source}: expected an [N, d] array, got shape {x.shape}")
        self._x = x
        self.d_in = int(x.shape[1])
        self.n_tokens = int(x.shape[0])
        self.shard_size = shard_size
        self.source = source
        self._prov = provenance or {}
        if sequence is None:
            self._seq = None
            self.n_sequences = self.n_tokens
        else:
            self._seq = np.asarray(sequence, dtype=np.int64)
            if self._seq.shape != (self.n_tokens,):
                raise ActivationError(f"{source}: sequence index must have shape [N]")
            self.n_sequences = int(self._seq.max()) + 1 if self.n_tokens else 0
        self._ids = list(ids) if ids is not None else None
        if self._ids is not None and len(self._ids) < self.n_sequences:
            raise ActivationError(f"{source}: fewer sequence ids than sequences")

    @property
    def num_shards(self) -> int:
        return (self.n_tokens + self.shard_size - 1) // self.shard_size

    def load_shard(self, i: int) -> Shard:
        lo, hi = i * self.shard_size, min((i + 1) * self.shard_size, self.n_tokens)
        x = np.array(self._x[lo:hi], dtype=np.float32)  # copies out of a memmap
        seq = np.arange(lo, hi, dtype=np.int64) if self._seq is None else self._seq[lo:hi]
        return Shard(x=x, seq=seq)

    def tokens_per_sequence(self) -> np.ndarray:
        if self._seq is None:
            return np.ones(self.n_tokens, dtype=np.int64)
        return np.bincount(self._seq, minlength=self.n_sequences).astype(np.int64)

    def sequence_ids(self) -> Sequence[str] | None:
        return self._ids

    def provenance(self) -> dict[str, Any]:
        return dict(self._prov)


class EmbedFileStore(ActivationStore):
    """What `hsg models embed` writes: `hidden` [N, T, d] with `content_mask` [N, T].

    Either format: one .safetensors file (ids in its metadata) or an npy directory
    (`hidden.npy`, `content_mask.npy`, `meta.json`). Rows are read a group at a time
    (safetensors slices, or a memory map), so the file is never loaded whole; each virtual
    shard holds whole rows, up to `shard_size` tokens. A row is a sequence, or a window of
    one: windows share their sequence's id, so the split still keeps them together.
    """

    def __init__(self, path: Path, shard_size: int = DEFAULT_SHARD_SIZE) -> None:
        self.path = path
        self.source = str(path)
        if path.is_dir():
            try:
                meta = json.loads((path / "meta.json").read_text())
                mask = np.load(path / "content_mask.npy").astype(bool)
                hidden = np.load(path / "hidden.npy", mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise ActivationError(f"cannot read embeddings directory {path}: {exc}") from exc
            if isinstance(meta.get("ids"), list):
                meta["ids"] = json.dumps(meta["ids"])
            shape = list(hidden.shape)
            self._hidden_npy: np.ndarray | None = hidden
        else:
            with safe_open(str(path), framework="numpy") as f:
                if "content_mask" not in set(f.keys()):
                    raise ActivationError(f"{path}: has `hidden` but no `content_mask`")
                meta = f.metadata() or {}
                mask = f.get_tensor("content_mask").astype(bool)
                shape = f.get_slice("hidden").get_shape()
            self._hidden_npy = None
        if len(shape) != 3 or tuple(shape[:2]) != mask.shape:
            raise ActivationError(
                f"{path}: hidden {list(shape)} and content_mask {list(mask.shape)} disagree"
            )
        self._mask = mask
        self.d_in = int(shape[2])
        counts = mask.sum(axis=1).astype(np.int64)
        self._counts = counts
        self.n_tokens = int(counts.sum())
        self.n_sequences = int(mask.shape[0])
        self._meta = {k: str(v) for k, v in meta.items()}
        self._ids = _ids_from_metadata(self._meta, self.n_sequences)
        # Group rows into shards of at most shard_size tokens (at least one row each).
        self._groups: list[tuple[int, int]] = []
        start, acc = 0, 0
        for b, c in enumerate(counts):
            if acc and acc + c > shard_size:
                self._groups.append((start, b))
                start, acc = b, 0
            acc += int(c)
        if self.n_sequences:
            self._groups.append((start, self.n_sequences))

    @property
    def num_shards(self) -> int:
        return len(self._groups)

    def load_shard(self, i: int) -> Shard:
        lo, hi = self._groups[i]
        if self._hidden_npy is not None:
            hidden = self._hidden_npy[lo:hi]
        else:
            with safe_open(str(self.path), framework="numpy") as f:
                hidden = f.get_slice("hidden")[lo:hi]
        mask = self._mask[lo:hi]
        x = np.asarray(hidden[mask], dtype=np.float32)
        seq = (np.nonzero(mask)[0] + lo).astype(np.int64)
        return Shard(x=x, seq=seq)

    def tokens_per_sequence(self) -> np.ndarray:
        return self._counts

    def sequence_ids(self) -> Sequence[str] | None:
        return self._ids

    def provenance(self) -> dict[str, Any]:
        prov: dict[str, Any] = {}
        for key, target in (
            ("model_id", "model_id"),
            ("model_version", "model_version"),
            ("version", "model_version"),
            ("checkpoint_hash", "encoder_checkpoint_hash"),
        ):
            if key in self._meta:
                prov[target] = self._meta[key]
        if "layer" in self._meta:
            try:
                prov["layer"] = int(self._meta["layer"])
            except ValueError:
                pass
        if self._meta.get("final_norm", "").lower() == "true":
            prov["hook"] = DEFAULT_HOOK + "; final layer norm applied"
        return prov


def _ids_from_metadata(meta: dict[str, str], n: int) -> list[str] | None:
    for key in ("ids", "names", "sequence_ids"):
        if key in meta:
            try:
                ids = json.loads(meta[key])
            except json.JSONDecodeError:
                return None
            if isinstance(ids, list) and len(ids) == n:
                return [str(i) for i in ids]
    return None


def open_activations(path: str | Path, shard_size: int = DEFAULT_SHARD_SIZE) -> ActivationStore:
    """Open a shard cache directory, an [N, d] .npy/.safetensors, or an `embed` output
    (.safetensors file or npy directory)."""
    p = Path(path)
    if p.is_dir():
        if (p / "hidden.npy").is_file() and not (p / MANIFEST_FILE).is_file():
            return EmbedFileStore(p, shard_size=shard_size)
        return ShardCacheStore(p)
    if not p.is_file():
        raise ActivationError(f"activations not found: {p}")
    if p.suffix == ".npy":
        try:
            x = np.load(p, mmap_mode="r")
        except Exception as exc:
            raise ActivationError(f"cannot read {p}: {exc}") from exc
        if x.ndim != 2:
            raise ActivationError(f"{p}: expected an [N, d] array, got shape {list(x.shape)}")
        return ArrayStore(x, shard_size=shard_size, source=str(p))
    if p.suffix == ".safetensors":
        try:
            with safe_open(str(p), framework="numpy") as f:
                keys = list(f.keys())
                shapes = {k: f.get_slice(k).get_shape() for k in keys}
        except Exception as exc:
            raise ActivationError(f"cannot read {p}: {exc}") from exc
        if "hidden" in shapes:
            return EmbedFileStore(p, shard_size=shard_size)
        key = "activations" if "activations" in shapes else None
        if key is None:
            two_d = [k for k, s in shapes.items() if len(s) == 2]
            if len(two_d) != 1:
                raise ActivationError(
                    f"{p}: expected a `hidden` [B,T,d] tensor, an `activations` [N,d] tensor, "
                    f"or exactly one 2-D tensor; found {shapes}"
                )
            key = two_d[0]
        if len(shapes[key]) != 2:
            raise ActivationError(f"{p}: `{key}` has shape {shapes[key]}, expected [N, d]")
        rows = _SafetensorsRows(p, key, shapes[key])
        return ArrayStore(rows, shard_size=shard_size, source=str(p))
    raise ActivationError(
        f"{p}: unsupported activation file (use .npy, .safetensors or a cache directory)"
    )


class _SafetensorsRows:
    """Row slices of one 2-D safetensors tensor, read lazily (looks like an array to ArrayStore)."""

    ndim = 2

    def __init__(self, path: Path, key: str, shape: list[int]) -> None:
        self.path, self.key, self.shape = path, key, tuple(shape)

    def __getitem__(self, rows: slice) -> np.ndarray:
        with safe_open(str(self.path), framework="numpy") as f:
            return f.get_slice(self.key)[rows]


# --------------------------------------------------------------------------- split
def split_ids(ids: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """True where sha256(seed, id) falls below `fraction`: a stable per-id coin flip."""
    if fraction <= 0:
        return np.zeros(len(ids), dtype=bool)
    threshold = int(fraction * 2**64)
    prefix = f"{seed}\x00".encode()
    out = np.empty(len(ids), dtype=bool)
    for i, sid in enumerate(ids):
        h = int.from_bytes(hashlib.sha256(prefix + str(sid).encode()).digest()[:8], "big")
        out[i] = h < threshold
    return out


def split_indices(n: int, fraction: float, seed: int) -> np.ndarray:
    """The same coin flip keyed by index, vectorised (splitmix64) for id-less arrays."""
    if fraction <= 0:
        return np.zeros(n, dtype=bool)
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z < np.uint64(min(int(fraction * 2**64), 2**64 - 1))


# --------------------------------------------------------------------------- batches
def iter_batches(
    store: ActivationStore,
    keep: np.ndarray,
    batch_size: int,
    *,
    rng: np.random.Generator | None = None,
    buffer_shards: int = 4,
) -> Iterator[np.ndarray]:
    """Yield float32 [<=batch_size, d] batches of the rows whose sequence is in `keep`.

    With `rng`, shard order is shuffled and rows are shuffled within a buffer of
    `buffer_shards` shards, so consecutive batches mix many sequences while memory stays at
    about `buffer_shards` shards. Without `rng`, rows come in storage order (evaluation).
    """
    order = rng.permutation(store.num_shards) if rng is not None else range(store.num_shards)
    order = list(order)
    carry: np.ndarray | None = None
    for g in range(0, len(order), buffer_shards):
        parts = [] if carry is None else [carry]
        for i in order[g : g + buffer_shards]:
            shard = store.load_shard(int(i))
            rows = shard.x[keep[shard.seq]]
            if len(rows):
                parts.append(rows)
        if not parts:
            continue
        buf = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if rng is not None:
            buf = buf[rng.permutation(len(buf))]
        n_full = len(buf) // batch_size * batch_size
        for lo in range(0, n_full, batch_size):
            yield buf[lo : lo + batch_size]
        carry = buf[n_full:] if n_full < len(buf) else None
    if carry is not None and len(carry):
        yield carry


def count_rows(store: ActivationStore, keep: np.ndarray) -> int:
    """Number of rows `iter_batches` will yield for `keep`, without reading activations."""
    return int(store.tokens_per_sequence()[keep].sum())
