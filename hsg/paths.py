"""Where hsg's non-Python files live, installed or not.

The Cypher schema, the named query library and the Maven build of the local server are
package resources under `hsg/resources/`, so a wheel carries them and `importlib.resources`
finds them wherever hsg is installed. The repository keeps `schema/`, `queries/` and
`docker/server/pom.xml` as links to them, where a reader (or Neo4j Browser's user) looks
first. `HSG_ASSETS` points at another folder with the same layout, e.g. to try an edited
query library without reinstalling.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def assets_root() -> Path:
    env = os.environ.get("HSG_ASSETS")
    if env:
        return Path(env).expanduser().resolve()
    # hsg is installed as files (never zipped), so the resource folder is a real directory
    return Path(str(resources.files("hsg") / "resources"))


def schema_dir() -> Path:
    return assets_root() / "schema"


def queries_dir() -> Path:
    return assets_root() / "queries"


def server_build_dir() -> Path:
    """The Maven project that resolves the Neo4j server, Browser and GDS jars."""
    return assets_root() / "server"


def default_home() -> Path:
    """Default local Neo4j home: `HSG_HOME`, else `.hsg/neo4j` under the working directory."""
    env = os.environ.get("HSG_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return (Path.cwd() / ".hsg" / "neo4j").resolve()
