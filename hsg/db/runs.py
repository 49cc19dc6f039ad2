"""Ingest runs that the graph still calls running, and whether their process is alive.

An `(:IngestRun)` node says `status: "running"` from its run's first write until the run
records its end. A run whose process was killed never records it, so the node alone cannot
tell a run in progress from a dead one. A run that stores `process_marker()` on its node
(the host and pid of its process) can be judged: on the same host, a pid that is gone
means the run is stale. Runs on another host, or without a marker, are "unknown".
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from hsg.db.cypher import load_query
from hsg.db.server import pid_alive

if TYPE_CHECKING:
    import neo4j

ALIVE, STALE, UNKNOWN = "running", "stale", "unknown"


def process_marker() -> dict[str, Any]:
    """The properties that identify this process on an `(:IngestRun)` node: host and pid."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def process_state(host: str | None, pid: int | None) -> str:
    """`running`, `stale` (the run's process is gone) or `unknown` (no marker, other host)."""
    if host is None or pid is None or host != socket.gethostname():
        return UNKNOWN
    return ALIVE if pid_alive(int(pid)) else STALE


def running_ingest_runs(driver: neo4j.Driver, database: str) -> list[dict[str, Any]]:
    """Every run still marked running (the named query), each with its process `state`."""
    records = driver.execute_query(
        load_query("running_ingest_runs").text, database_=database
    ).records
    return [
        {**record.data(), "state": process_state(record["host"], record["pid"])}
        for record in records
    ]
