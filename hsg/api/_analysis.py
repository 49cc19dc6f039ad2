"""Graph analyses inside Neo4j: PageRank per label, topology, differential-centrality targets."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from hsg.api._load import Connection

if TYPE_CHECKING:
    from hsg.analysis import AnalysisSession
    from hsg.analysis.pagerank import PageRankRun
    from hsg.analysis.targets import TargetsReport
    from hsg.analysis.topology import TopologyReport
    from hsg.db.settings import ConnectionSettings

Log = Callable[[str], None]


def _config(factory, **kwargs):
    """Build a config; an invalid value is a `ConfigError` (the CLI's usage error)."""
    from hsg.config import ConfigError

    try:
        return factory(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


@contextmanager
def _session(connection: Connection | ConnectionSettings | None) -> Iterator[AnalysisSession]:
    """A GDS session on the connection's server; driver errors become `DatabaseError`."""
    from neo4j.exceptions import Neo4jError, ServiceUnavailable

    from hsg.analysis import open_session
    from hsg.db.connection import translate
    from hsg.db.settings import ConnectionSettings

    if connection is None:
        settings = ConnectionSettings.from_env()
    elif isinstance(connection, Connection):
        settings = connection.settings
    else:
        settings = connection
    try:
        with open_session(settings) as session:
            yield session
    except (Neo4jError, ServiceUnavailable) as exc:
        raise translate(exc, settings) from exc


def pagerank(
    labels: Sequence[str],
    *,
    connection: Connection | ConnectionSettings | None = None,
    sae: str | None = None,
    damping: float = 0.85,
    weight: str = "count",
    orientation: str = "undirected",
    max_iterations: int = 100,
    tolerance: float = 1e-7,
    log: Log | None = None,
) -> PageRankRun:
    """GDS PageRank of each label's sequence–feature graph; the scores are stored as
    ``(:Feature)-[:CENTRALITY]->(:Label)`` (replacing those labels' previous scores in one
    transaction) and returned. ``sae`` may be left out when the graph holds one SAE."""
    from hsg.analysis.pagerank import PageRankConfig, run_pagerank

    config = _config(
        PageRankConfig,
        damping=damping,
        weight=weight,
        orientation=orientation,
        max_iterations=max_iterations,
        tolerance=tolerance,
    )
    with _session(connection) as session:
        return run_pagerank(session, sae, list(labels), config, progress=log)


def topology(
    labels: Sequence[str],
    *,
    connection: Connection | ConnectionSettings | None = None,
    sae: str | None = None,
    max_fraction: float = 0.5,
    steps: int = 10,
    damping: float = 0.85,
    weight: str = "count",
    max_iterations: int = 100,
    tolerance: float = 1e-7,
    log: Log | None = None,
) -> TopologyReport:
    """Counts, bipartite density, components, k-core and the fragmentation curve per label
    (removing the top-PageRank features step by step); nothing is written."""
    from hsg.analysis.pagerank import PageRankConfig
    from hsg.analysis.topology import TopologyConfig, run_topology

    pr = _config(
        PageRankConfig,
        damping=damping,
        weight=weight,
        max_iterations=max_iterations,
        tolerance=tolerance,
    )
    config = _config(TopologyConfig, pagerank=pr, max_fraction=max_fraction, steps=steps)
    with _session(connection) as session:
        return run_topology(session, sae, list(labels), config, progress=log)


def targets(
    up: str,
    down: str,
    *,
    connection: Connection | ConnectionSettings | None = None,
    sae: str | None = None,
    top: int = 20,
    min_support: int = 3,
    pseudo_count: float = 1e-6,
) -> TargetsReport:
    """Features ranked by the log2 fold change of normalised PageRank, ``up`` vs ``down``
    (the stored scores of `pagerank`); ``report.to_json()`` is the targets.json `steer`
    reads, with the SAE, model and parameters that produced it."""
    from hsg.analysis.targets import TargetsConfig, compute_targets

    config = _config(
        TargetsConfig, up=up, down=down, top=top, min_support=min_support, pseudo_count=pseudo_count
    )
    with _session(connection) as session:
        return compute_targets(session, sae, config)
