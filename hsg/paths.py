"""Where the project's non-Python assets live.

`schema/` and `queries/` are plain Cypher files at the repository root so that the same
text runs from Python and from Neo4j Browser; the package finds them from its own location
(editable installs) or from `HSG_ASSETS` when installed elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def assets_root() -> Path:
    env = os.environ.get("HSG_ASSETS")
    if env:
        return Path(env).expanduser().resolve()
    return PACKAGE_DIR.parent


def schema_dir() -> Path:
    return assets_root() / "schema"


def queries_dir() -> Path:
    return assets_root() / "queries"


def server_build_dir() -> Path:
    """The Maven project that resolves the Neo4j server, Browser and GDS jars."""
    return assets_root() / "docker" / "server"


def default_home() -> Path:
    """Default local Neo4j home: `HSG_HOME`, else `.hsg/neo4j` under the working directory."""
    env = os.environ.get("HSG_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return (Path.cwd() / ".hsg" / "neo4j").resolve()
