"""Loading the parts a workflow pairs: encoders, SAEs, regions, and the database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import neo4j
    import pandas as pd

    from hsg.db.settings import ConnectionSettings
    from hsg.models.encoder import Encoder
    from hsg.regions.records import SequenceRecord
    from hsg.sae.model import SparseAutoencoder

PathLike = str | Path


def load_encoder(model: PathLike | Encoder, device: str | None = None, dtype=None) -> Encoder:
    """A Nucleotide Transformer from a local Hugging Face directory (or a cached hub id).

    ``device`` is checked first (``None``/``"auto"``: CUDA when present, else CPU), so a typo
    or a missing GPU fails before seconds are spent reading weights. An `Encoder` passes
    through unchanged, which lets every workflow take either a path or a loaded model.
    """
    from hsg.models.encoder import Encoder, check_device
    from hsg.models.encoder import load_encoder as _load

    if isinstance(model, Encoder):
        return model
    return _load(model, device=check_device(device), dtype=dtype)


def load_sae(path: PathLike | SparseAutoencoder, device: str | None = None) -> SparseAutoencoder:
    """An SAE directory (``cfg.json`` + ``sae.safetensors``), hash and shapes verified."""
    from hsg.models.encoder import check_device
    from hsg.sae.model import SparseAutoencoder

    if isinstance(path, SparseAutoencoder):
        return path
    return SparseAutoencoder.load(path, device=check_device(device)).eval()


def iter_regions(
    path: PathLike,
    *,
    fmt: str | None = None,
    reference: PathLike | None = None,
    label: str | None = None,
    label_column: int | str | None = None,
    window: int | None = None,
    stride: int | None = None,
) -> Iterator[SequenceRecord]:
    """Stream the records of a BED (+ reference), FASTA or TSV file; errors name file and line.

    ``window`` tiles regions longer than that many bases into windows ``stride`` apart
    (default ``window``), as `ingest` does: every reader of a regions file sees the same
    sequences."""
    from hsg.regions.readers import read_records

    column = label_column
    if isinstance(column, str) and column.isdigit():
        column = int(column)
    records = read_records(path, fmt=fmt, reference=reference, label=label, label_column=column)
    if window is not None:
        from hsg.regions.windows import tile_records

        records = tile_records(records, window, stride)
    return iter(records)


def read_regions(path: PathLike, **options: Any) -> list[SequenceRecord]:
    """All records of a regions file as a list (see `iter_regions` for the options)."""
    return list(iter_regions(path, **options))


@dataclass
class Connection:
    """An open Neo4j connection and the settings it was opened with.

    Use it as a context manager (or call `close`). `query` runs the named, parameterised
    read queries of the library (`hsg.db.cypher.list_queries()`) — the same text Neo4j
    Browser users run — and returns a DataFrame.
    """

    settings: ConnectionSettings
    driver: neo4j.Driver

    @property
    def database(self) -> str:
        return self.settings.database

    def query(self, name: str, **params: Any) -> pd.DataFrame:
        import pandas as pd

        from hsg.db.cypher import load_query

        query = load_query(name)
        query.check_params(params)
        result = self.driver.execute_query(
            query.text, parameters_=params, database_=self.database, result_transformer_=_frame
        )
        return result if isinstance(result, pd.DataFrame) else pd.DataFrame(result)

    def counts(self) -> dict[str, int]:
        """Nodes and relationships by type, as the ingest summary reports them."""
        from hsg.graph.statements import COUNTS

        records = self.driver.execute_query(COUNTS, database_=self.database).records
        return dict(records[0])

    def check(self) -> list:
        """Every consistency check of `hsg db check` (duplicates, doubled or stray
        activations, incomplete dictionaries, runs left running) as `Finding`s."""
        from hsg.graph.consistency import check_graph

        return check_graph(self.driver, self.database)

    def close(self) -> None:
        self.driver.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _frame(result):
    return result.to_df()


def connect(
    uri: str | None = None,
    user: str | None = None,
    password: str | None = None,
    database: str | None = None,
    *,
    home: PathLike | None = None,
    bolt_port: int | None = None,
) -> Connection:
    """Open and verify a connection; unset arguments come from NEO4J_URI, NEO4J_USER,
    NEO4J_PASSWORD, NEO4J_DATABASE, else the local server of `hsg db start` (port
    `bolt_port`, else HSG_BOLT_PORT; its generated password read from `home`, else
    HSG_HOME). The server is chosen by `hsg.db.settings.resolve_uri`, as in the CLI.
    Raises `DatabaseError` with what to do when the server is down or the password is
    wrong."""
    from hsg.db.connection import open_driver
    from hsg.db.settings import ConnectionSettings

    settings = ConnectionSettings.from_env(
        uri,
        user,
        password,
        database,
        home=Path(home) if home is not None else None,
        bolt_port=bolt_port,
    )
    return Connection(settings, open_driver(settings))


def connection_for(settings: ConnectionSettings) -> Connection:
    """A `Connection` for settings already resolved (the CLI's connection options)."""
    from hsg.db.connection import open_driver

    return Connection(settings, open_driver(settings))
