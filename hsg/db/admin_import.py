"""Running Neo4j's bulk importer (`neo4j-admin database import full`) on the local server.

The home hsg assembles from Maven has no `bin/neo4j-admin` script, so the admin tool's main
class runs from the home's `lib/` with the same java, environment and private umask as the
server (`hsg.db.server`). The importer refuses a database in use ("The database is in use")
even for a new name, so the server is stopped first and started again afterwards — also
when the import fails, so a failed import leaves the server as it found it.

This module knows files, not the graph: `hsg.graph.bulk` writes them.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hsg.db import server
from hsg.db.errors import DatabaseError


@dataclass
class ImportResult:
    database: str
    seconds: float  # the importer alone (not the stop and start around it)
    nodes: int | None = None
    relationships: int | None = None
    output: str = ""


def store_exists(cfg: server.ServerConfig, database: str) -> bool:
    return (cfg.home / "data" / "databases" / database).exists()


def _files_arg(kind: str, name: str, paths: list[Path]) -> str:
    # the importer runs in the server's home: a relative path would be read from there
    paths = [Path(p).resolve() for p in paths]
    for path in paths:
        if "," in str(path):
            raise DatabaseError(f"the importer cannot read a file whose path holds a comma: {path}")
    return f"--{kind}={name}=" + ",".join(str(p) for p in paths)


def import_command(
    cfg: server.ServerConfig,
    java: Path,
    database: str,
    nodes: dict[str, list[Path]],
    relationships: dict[str, list[Path]],
    overwrite: bool,
    report: Path,
) -> list[str]:
    cmd = [
        str(java),
        "-Dfile.encoding=UTF-8",
        *[o for o in server.JVM_OPTIONS if o.startswith("--add-")],
        "-cp",
        str(cfg.home / "lib" / "*"),
        server.ADMIN_TOOL,
        "database",
        "import",
        "full",
        database,  # first: a files option would take a later word as one more file
        f"--report-file={Path(report).resolve()}",
        "--multiline-fields=false",
        "--array-delimiter=TAB",  # node labels are TAB-separated (hsg.graph.bulk)
    ]
    if overwrite:
        cmd.append("--overwrite-destination=true")
    cmd += [_files_arg("nodes", label, files) for label, files in nodes.items()]
    cmd += [_files_arg("relationships", rel, files) for rel, files in relationships.items()]
    return cmd


_IMPORTED = re.compile(r"Imported:\s*\n\s*(\d+) nodes\s*\n\s*(\d+) relationships", re.MULTILINE)


def import_full(
    cfg: server.ServerConfig,
    database: str,
    nodes: dict[str, list[Path]],
    relationships: dict[str, list[Path]],
    overwrite: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
    start_timeout: float = 180.0,
) -> ImportResult:
    """Stop the server, import into `database` (replacing its store when `overwrite`),
    start the server again. `DatabaseError` with the importer's own words on failure."""
    java, _ = server.find_java(cfg)
    if not (cfg.home / "lib").is_dir():
        raise DatabaseError(f"{cfg.home} is not an installed Neo4j home: run `hsg db install`")
    if store_exists(cfg, database) and not overwrite:
        raise DatabaseError(
            f"database {database!r} already exists in {cfg.home}: the importer only creates "
            "databases; pass --overwrite to replace it (its data is lost)"
        )
    server.write_conf(cfg)
    if server.running_pid(cfg) is not None:
        log(f"stopping Neo4j ({cfg.home}) for the importer …")
        server.stop(cfg, log=log)
    report = cfg.home / "logs" / "import.report"
    cmd = import_command(cfg, java, database, nodes, relationships, overwrite, report)
    log(f"importing into {database!r} with neo4j-admin database import full …")
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=server._neo4j_env(cfg, java),
            umask=server.PRIVATE_UMASK,
            cwd=cfg.home,
        )
    finally:
        seconds = time.perf_counter() - started
        log("starting Neo4j again …")
        server.start(cfg, timeout=start_timeout, log=log)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise DatabaseError(
            f"neo4j-admin database import full failed (exit {proc.returncode}); the database "
            f"was not changed unless --overwrite was given. Its output:\n{output[-3000:]}"
        )
    result = ImportResult(database=database, seconds=seconds, output=output)
    match = _IMPORTED.search(output)
    if match:
        result.nodes, result.relationships = int(match.group(1)), int(match.group(2))
    return result
