"""Reading `.cypher` files: the schema and the named query library.

Both live as plain files so the same text runs from Python and from Neo4j Browser. A file
holds statements separated by `;` at the end of a line; `//` comment lines are kept out of
the statements sent to the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hsg.paths import queries_dir

_HEADER = re.compile(r"^//\s*(\w+)\s*:\s*(.*)$")


def split_statements(text: str) -> list[str]:
    statements, current = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("//"):
            continue
        current.append(line.rstrip())
        if stripped.endswith(";"):
            statements.append("\n".join(current).rstrip().rstrip(";").strip())
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


@dataclass(frozen=True)
class NamedQuery:
    """One query of the library: the file's statement plus its `// key: value` header."""

    name: str
    text: str
    description: str
    params: tuple[str, ...]
    path: Path

    def check_params(self, params: Iterable[str]) -> None:
        """The parameters given must be exactly the query's own: a renamed or forgotten one
        would otherwise read as null and quietly return nothing."""
        given = set(params)
        missing = sorted(set(self.params) - given)
        extra = sorted(given - set(self.params))
        if missing or extra:
            raise ValueError(
                f"query {self.name!r} takes parameters {sorted(self.params)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {extra}" if extra else "")
            )


def load_query(name: str, directory: Path | None = None) -> NamedQuery:
    directory = directory or queries_dir()
    path = directory / f"{name}.cypher"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.cypher")))
        raise KeyError(f"no query named {name!r} in {directory} (known: {known})")
    raw = path.read_text(encoding="utf-8")
    header: dict[str, str] = {}
    for line in raw.splitlines():
        match = _HEADER.match(line.strip())
        if match:
            header[match.group(1).lower()] = match.group(2).strip()
    statements = split_statements(raw)
    if len(statements) != 1:
        raise ValueError(f"{path} must hold exactly one statement, found {len(statements)}")
    params = tuple(p.strip() for p in header.get("params", "").split(",") if p.strip())
    return NamedQuery(name, statements[0], header.get("description", ""), params, path)


def list_queries(directory: Path | None = None) -> list[NamedQuery]:
    directory = directory or queries_dir()
    return [load_query(p.stem, directory) for p in sorted(directory.glob("*.cypher"))]
