"""Writing and reading the hidden-state files of ``hsg models embed``.

Layout (the same arrays in both formats; N rows = sequences or windows, T = longest row):

- ``hidden`` float32 [N, T, d] — pad positions are zero
- ``input_ids`` int64 [N, T], ``attention_mask`` bool [N, T] (True at <cls> and content),
  ``content_mask`` bool [N, T] (True at nucleotide tokens only)
- ``token_start`` / ``token_end`` int32 [N, T] — base span of each content token in the
  original sequence, -1 elsewhere; ``window_start`` int64 [N]
- metadata: ``ids`` (JSON list, one per row), model id, version, layer, final_norm,
  checkpoint hash

``safetensors`` is one file; the header is written first and ``hidden`` is streamed batch by
batch, so memory stays at one batch however large the output. ``npy`` is a directory of
``.npy`` arrays (``hidden.npy`` memory-mapped while writing) plus ``meta.json``.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hsg.models.encoder import EncodedBatch

FORMAT_TAG = "hsg.embeddings/1"
FORMATS = ("safetensors", "npy")
_ST_DTYPES = {np.float32: "F32", np.int64: "I64", np.int32: "I32", np.bool_: "BOOL"}


@dataclass
class StoredEmbeddings:
    hidden: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    content_mask: torch.Tensor
    token_start: torch.Tensor
    token_end: torch.Tensor
    window_start: torch.Tensor
    ids: list[str]
    metadata: dict[str, str]


class EmbeddingWriter:
    """Stream `EncodedBatch` rows, in order, into a safetensors file or an npy directory.

    A writer that is left by an exception removes its partial output, so a crashed run never
    leaves a file that looks complete.
    """

    def __init__(
        self,
        path: str | Path,
        fmt: str,
        n_rows: int,
        n_positions: int,
        hidden_size: int,
        ids: list[str],
        pad_token_id: int,
        metadata: dict[str, Any] | None = None,
    ):
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r} (expected one of {FORMATS})")
        if len(ids) != n_rows:
            raise ValueError(f"{len(ids)} ids for {n_rows} rows")
        self.path = Path(path)
        self.fmt = fmt
        self.shape = (n_rows, n_positions, hidden_size)
        self.metadata = {
            "format": FORMAT_TAG,
            "ids": json.dumps(ids),
            **{k: str(v) for k, v in (metadata or {}).items()},
        }
        n, t = n_rows, n_positions
        self.small: dict[str, np.ndarray] = {
            "input_ids": np.full((n, t), pad_token_id, dtype=np.int64),
            "attention_mask": np.zeros((n, t), dtype=np.bool_),
            "content_mask": np.zeros((n, t), dtype=np.bool_),
            "token_start": np.full((n, t), -1, dtype=np.int32),
            "token_end": np.full((n, t), -1, dtype=np.int32),
            "window_start": np.zeros((n,), dtype=np.int64),
        }
        self.rows_written = 0
        self._open()

    # ------------------------------------------------------------------ formats

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == "npy":
            self.path.mkdir(parents=True, exist_ok=True)
            self._memmap = np.lib.format.open_memmap(
                self.path / "hidden.npy", mode="w+", dtype=np.float32, shape=self.shape
            )
            return
        header: dict[str, Any] = {}
        offset = 0
        entries = [("hidden", np.float32, self.shape)] + [
            (k, v.dtype.type, v.shape) for k, v in self.small.items()
        ]
        for name, dtype, shape in entries:
            size = int(np.prod(shape)) * np.dtype(dtype).itemsize
            header[name] = {
                "dtype": _ST_DTYPES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
        header["__metadata__"] = self.metadata
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in close()/__exit__
        self._fh.write(struct.pack("<Q", len(raw)))
        self._fh.write(raw)

    def write(self, batch: EncodedBatch) -> None:
        b, t, d = batch.hidden.shape
        n, width, hidden_size = self.shape
        r = self.rows_written
        if r + b > n:
            raise ValueError(f"more rows than announced ({n})")
        if t > width or d != hidden_size:
            raise ValueError(f"batch shape {(b, t, d)} does not fit {self.shape}")
        hidden = batch.hidden.numpy()
        if self.fmt == "npy":
            self._memmap[r : r + b, :t] = hidden
        else:
            block = np.zeros((b, width, d), dtype=np.float32)
            block[:, :t] = hidden
            self._fh.write(block.tobytes())
        self.small["input_ids"][r : r + b, :t] = batch.input_ids.numpy()
        self.small["attention_mask"][r : r + b, :t] = batch.attention_mask.numpy()
        self.small["content_mask"][r : r + b, :t] = batch.content_mask.numpy()
        for i, offsets in enumerate(batch.offsets):
            if offsets:
                spans = np.asarray(offsets, dtype=np.int32)
                self.small["token_start"][r + i, 1 : 1 + len(spans)] = spans[:, 0]
                self.small["token_end"][r + i, 1 : 1 + len(spans)] = spans[:, 1]
        self.small["window_start"][r : r + b] = batch.window_start
        self.rows_written += b

    def close(self) -> None:
        if self.rows_written != self.shape[0]:
            raise ValueError(f"wrote {self.rows_written} rows of {self.shape[0]} announced")
        if self.fmt == "npy":
            self._memmap.flush()
            del self._memmap
            for name, arr in self.small.items():
                np.save(self.path / f"{name}.npy", arr)
            meta = {**self.metadata, "ids": json.loads(self.metadata["ids"])}
            (self.path / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        else:
            for arr in self.small.values():
                self._fh.write(np.ascontiguousarray(arr).tobytes())
            self._fh.close()

    def abort(self) -> None:
        if self.fmt == "npy":
            self.__dict__.pop("_memmap", None)
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            self._fh.close()
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddingWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_embeddings(path: str | Path) -> StoredEmbeddings:
    """Load a file (safetensors) or directory (npy) written by `EmbeddingWriter`."""
    p = Path(path)
    if p.is_dir():
        meta = json.loads((p / "meta.json").read_text())
        ids = meta.pop("ids")
        arrays = {
            name: torch.from_numpy(np.load(p / f"{name}.npy"))
            for name in (
                "hidden",
                "input_ids",
                "attention_mask",
                "content_mask",
                "token_start",
                "token_end",
                "window_start",
            )
        }
    else:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(p), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        ids = json.loads(meta.pop("ids"))
        arrays = load_file(str(p))
    if meta.get("format") != FORMAT_TAG:
        raise ValueError(f"{p}: not an hsg embeddings file (format {meta.get('format')!r})")
    return StoredEmbeddings(ids=ids, metadata=meta, **arrays)
