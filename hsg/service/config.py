"""What one service serves and where: a JSON file, or the options of `hsg serve`.

    {"pairs": [{"name": "L6", "model": "models/nt-v2-50m", "sae": "sae/L6"}],
     "references": {"hg38": "/data/hg38.fa"},
     "host": "127.0.0.1", "port": 8765, "device": "cuda", "dtype": "bf16",
     "neo4j": {"uri": "bolt://127.0.0.1:7687"}}

Unknown keys are errors (as in every hsg config): a misspelt key would otherwise serve
something other than what the file says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsg.config import ConfigError, JsonConfig

NEO4J_KEYS = ("uri", "user", "password", "database", "home")


@dataclass
class PairConfig(JsonConfig):
    """One encoder + SAE pair, named as clients choose it (`sae=` of a job)."""

    name: str
    model: str
    sae: str
    layer: int | None = None
    allow_model_mismatch: bool = False


@dataclass
class ServiceConfig(JsonConfig):
    pairs: list[PairConfig] = field(default_factory=list)
    references: dict[str, str] = field(default_factory=dict)  # name → FASTA for BED jobs
    host: str = "127.0.0.1"  # loopback unless asked: the token is the only guard
    port: int = 8765
    device: str | None = None  # None: CUDA when present, else CPU
    dtype: str | None = None  # e.g. bf16 on a GPU
    state_dir: str = ".hsg/service"  # token, service id, uploads of unfinished jobs
    max_encode_sequences: int = 64  # POST /encode is synchronous: keep it small
    max_upload_mb: float = 1024.0
    neo4j: dict[str, str] = field(default_factory=dict)  # uri, user, password, database, home

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceConfig:
        data = dict(data) if isinstance(data, dict) else data
        pairs = data.pop("pairs", []) if isinstance(data, dict) else []
        cfg = super().from_dict(data)
        if not isinstance(pairs, list):
            raise ConfigError("pairs must be a list of {name, model, sae}")
        cfg.pairs = [p if isinstance(p, PairConfig) else PairConfig.from_dict(p) for p in pairs]
        cfg.check()
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> ServiceConfig:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read service config {path}: {exc}") from exc
        return cls.from_json(text)

    def check(self) -> None:
        names = [p.name for p in self.pairs]
        if len(set(names)) != len(names):
            raise ConfigError(f"pair names must be unique, got {names}")
        unknown = sorted(set(self.neo4j) - set(NEO4J_KEYS))
        if unknown:
            raise ConfigError(f"unknown neo4j key(s): {', '.join(unknown)}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1..65535, got {self.port}")
        if self.max_encode_sequences < 1 or self.max_upload_mb <= 0:
            raise ConfigError("max_encode_sequences and max_upload_mb must be positive")

    def pair(self, name: str | None) -> PairConfig:
        """The pair a request names; without a name, the only (or first) one."""
        if not self.pairs:
            raise ConfigError("the service serves no encoder/SAE pair")
        if name is None:
            return self.pairs[0]
        for p in self.pairs:
            if p.name == name:
                return p
        raise KeyError(
            f"unknown SAE {name!r}: this service serves {', '.join(p.name for p in self.pairs)}"
        )

    def reference(self, name: str | None) -> str | None:
        """A reference by its configured name, or by the file name of a configured one."""
        if name is None:
            return None
        if name in self.references:
            return self.references[name]
        for path in self.references.values():
            if Path(path).name == Path(name).name:
                return path
        known = ", ".join(sorted(self.references)) or "none configured"
        raise KeyError(f"unknown reference {name!r} (this service knows: {known})")
