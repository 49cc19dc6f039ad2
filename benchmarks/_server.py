"""A throw-away Neo4j + GDS server for benchmarks, so that no user graph is ever touched.

It lives in its own home (.hsg/bench-neo4j) on its own ports and is emptied before each
benchmark; the jars come from the same Maven build as `hsg db start`.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from hsg.db import server
from hsg.db.connection import open_driver
from hsg.db.schema import apply_schema
from hsg.db.settings import ConnectionSettings
from hsg.graph.maintenance import wipe

BENCH_HOME = Path(os.environ.get("HSG_BENCH_HOME", ".hsg/bench-neo4j")).resolve()
BENCH_BOLT = int(os.environ.get("HSG_BENCH_BOLT_PORT", "27687"))
BENCH_HTTP = int(os.environ.get("HSG_BENCH_HTTP_PORT", "27474"))


def bench_config(heap: str = "2g", pagecache: str = "1g") -> server.ServerConfig:
    """The throw-away server's configuration (for a benchmark that bulk-imports into it)."""
    return server.ServerConfig(
        home=BENCH_HOME, bolt_port=BENCH_BOLT, http_port=BENCH_HTTP, heap=heap, pagecache=pagecache
    )


@contextmanager
def bench_database(heap: str = "2g", pagecache: str = "1g", keep: bool = False):
    """Yields (driver, settings) of an empty database with the schema applied (`keep`: the
    database as an earlier run left it, for a benchmark that checks what it finds)."""
    cfg = bench_config(heap, pagecache)
    started = server.running_pid(cfg) is None
    if started and not keep:
        # new store files, not only an emptied graph: a store that earlier benchmarks filled
        # and wiped keeps its size and its freed records, and the writer measured 1.4× slower
        # in one (11.4–12.7k against 8.6k ACTIVATES/s, 8,192 windows, session 6)
        for part in ("databases", "transactions"):
            shutil.rmtree(cfg.home / "data" / part / "neo4j", ignore_errors=True)
    if started:
        server.start(cfg, log=lambda m: None)
    settings = ConnectionSettings.from_env(uri=cfg.bolt_uri, home=cfg.home, user="neo4j")
    driver = open_driver(settings)
    try:
        if not keep:
            wipe(driver, settings.database)
            apply_schema(driver, settings.database)
        yield driver, settings
    finally:
        driver.close()
        if started:
            server.stop(cfg)
