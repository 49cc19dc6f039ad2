"""``manifest.json``: what a shard set was made from, written before its first shard.

Its identity (model, SAE, input hash, the parameters that change the output, shard size)
is hashed into a fingerprint that every shard marker repeats: a shard copied in from
another set, or a re-run with another SAE into the same folder, is caught by comparing
fingerprints instead of trusting file names.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hsg.shards.errors import ShardError
from hsg.shards.schema import FORMAT, VERSION

MANIFEST = "manifest.json"

# parameters that change how the work is done, not what it produces: a resumed run may
# change them (more workers, another batch size) and still continue the same set
EXECUTION_PARAMETERS = frozenset(
    {"batch_size", "write_batch", "device", "dry_run", "engine", "address", "actors",
     "num_cpus", "num_gpus", "shards"}
)  # fmt: skip


@dataclass
class Manifest:
    model: dict[str, Any]  # the Model node's properties (id = checkpoint hash)
    sae: dict[str, Any]  # the SAE node's properties (id, layer, d_in, d_sae, …)
    parameters: dict[str, Any]  # the ingest parameters (IngestConfig as a dict)
    shard_size: int  # input records per shard
    shards: int  # how many shards make the set
    sequences: int  # input records, repeats included
    input_sha256: str | None = None
    hsg_version: str = ""
    created: str = ""
    format: str = FORMAT
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """What must agree for two manifests to describe the same shards."""
        return {
            "format": self.format,
            "version": self.version,
            "model": self.model,
            "sae": self.sae,
            "input_sha256": self.input_sha256,
            "shard_size": self.shard_size,
            "shards": self.shards,
            "sequences": self.sequences,
            "parameters": {
                k: v for k, v in sorted(self.parameters.items()) if k not in EXECUTION_PARAMETERS
            },
        }

    @property
    def fingerprint(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def differences(self, other: Manifest) -> list[str]:
        """Human-readable `key: this vs other` lines where the identities differ."""
        mine, theirs = _flatten(self.identity()), _flatten(other.identity())
        return [
            f"{key}: {_short(mine.get(key))} vs {_short(theirs.get(key))}"
            for key in sorted(set(mine) | set(theirs))
            if mine.get(key) != theirs.get(key)
        ]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fingerprint"] = self.fingerprint
        return data


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Write atomically (temporary file + rename): a manifest is whole or absent."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST
    write_json_atomic(path, manifest.to_dict())
    return path


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(directory: str | Path) -> Manifest:
    """The manifest of a shard set; `ShardError` when it is missing, unreadable or foreign."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ShardError(f"{directory} is not a shard folder (no such directory)")
    if not path.is_file():
        raise ShardError(
            f"{directory} has no {MANIFEST}: not an activation shard set, or one whose "
            "encoding never started. Make one with `hsg ingest --engine ray --shards DIR`."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"{path} is corrupt ({exc}); encode the shards again") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ShardError(f"{path} is not an hsg activation-shard manifest")
    if data.get("version") != VERSION:
        raise ShardError(
            f"{path} has shard format version {data.get('version')!r}; this hsg reads "
            f"version {VERSION}: encode the shards again with this hsg"
        )
    stored = data.pop("fingerprint", None)
    try:
        manifest = Manifest(**data)
    except TypeError as exc:
        raise ShardError(f"{path} is corrupt: {exc}") from exc
    if stored != manifest.fingerprint:
        raise ShardError(
            f"{path} was edited or damaged: its fingerprint does not match its contents"
        )
    return manifest
