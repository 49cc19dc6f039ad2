#!/usr/bin/env bash
# Check that hsg works as an installed wheel, not only from this checkout: build the wheel,
# install it into a fresh virtual environment outside the checkout, and from a directory
# outside the checkout run `hsg --version`, `hsg db init`, `hsg targets --help` and one named
# query of the library against the server that NEO4J_URI / HSG_HOME point at (scripts/test.sh
# runs this after starting its test server). A missing package resource (schema, queries, the
# server's pom.xml) or a module that only imports from the checkout fails here.
#
# The fresh environment has no pip and downloads nothing: hsg comes from the wheel, and its
# dependencies (torch and the rest) are found in .venv through a .pth path line. A path line
# does not run .venv's own .pth files, so .venv's editable install of hsg stays invisible.
#
# Usage: scripts/check_wheel.sh [--no-db]   (--no-db skips the two steps that need a server)
# Exit status: 0 when every step passed, 1 otherwise (the failing step is named on stderr).
set -uo pipefail
cd "$(dirname "$0")/.."
CHECKOUT="$PWD"
VENV_PY="$CHECKOUT/.venv/bin/python"
WITH_DB=1
[ "${1:-}" = "--no-db" ] && WITH_DB=0

fail() {
  echo "check_wheel: FAILED: $*" >&2
  exit 1
}
step() { echo "check_wheel: $*" >&2; }

[ -x "$VENV_PY" ] || fail "no .venv here; run scripts/setup.sh first"
START=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hsg-wheel-check.XXXXXX") || fail "mktemp"
trap 'rm -rf "$WORK"' EXIT

# 1. Build from a copy of the files a clone would have (tracked and untracked-but-not-ignored),
#    so the build's own build/ and *.egg-info never land in the checkout.
mkdir "$WORK/src" "$WORK/dist"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$WORK/src" || fail "copying the source tree"
else
  cp -a pyproject.toml README.md hsg "$WORK/src/" || fail "copying the source tree"
fi
# .venv's setuptools builds the wheel when it is new enough to do so alone (>= 70.1 has
# bdist_wheel built in): that takes ~2 s instead of ~8 s for an isolated build environment.
if "$VENV_PY" - <<'EOF' 2>/dev/null; then
import setuptools
major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
raise SystemExit(0 if (major, minor) >= (70, 1) else 1)
EOF
  ISOLATION=--no-build-isolation
else
  ISOLATION=
fi
step "building the wheel ${ISOLATION:-(isolated build)}"
"$VENV_PY" -m pip wheel -q --disable-pip-version-check --no-deps $ISOLATION \
  -w "$WORK/dist" "$WORK/src" >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log" >&2; fail "building the wheel"; }
WHEEL=$(ls "$WORK"/dist/hsg-*.whl 2>/dev/null | head -n 1)
[ -n "$WHEEL" ] || fail "the build produced no hsg wheel"
rm -rf "$WORK/src"

# 2. A fresh environment outside the checkout, based on the same interpreter as .venv.
ENV="$WORK/venv"
"$VENV_PY" -m venv --without-pip "$ENV" || fail "creating the fresh venv"
PY="$ENV/bin/python"
site_of() { "$1" -c 'import sysconfig; print(sysconfig.get_path("purelib"))'; }
ENV_SITE=$(site_of "$PY") || fail "locating the fresh venv's site-packages"
DEPS_SITE=$(site_of "$VENV_PY") || fail "locating .venv's site-packages"
DEPS_PLAT=$("$VENV_PY" -c 'import sysconfig; print(sysconfig.get_path("platlib"))')
{
  echo "$DEPS_SITE"
  [ "$DEPS_PLAT" != "$DEPS_SITE" ] && echo "$DEPS_PLAT"
} >"$ENV_SITE/hsg-wheel-check-deps.pth"
# pip itself comes from .venv through that path line; --ignore-installed keeps it from
# looking at (or uninstalling) .venv's editable hsg: the wheel goes into the fresh venv only.
step "installing $(basename "$WHEEL") into a fresh venv"
"$PY" -m pip install -q --disable-pip-version-check --no-deps --no-index --ignore-installed \
  "$WHEEL" >"$WORK/install.log" 2>&1 ||
  { cat "$WORK/install.log" >&2; fail "installing the wheel"; }
[ -x "$ENV/bin/hsg" ] || fail "the wheel installed no 'hsg' console script"

# 3. Everything from here runs outside the checkout, with nothing pointing back into it.
cd "$WORK" || fail "cd $WORK"
unset PYTHONPATH HSG_ASSETS
HSG="$ENV/bin/hsg"

step "hsg is imported from the wheel"
"$PY" - "$CHECKOUT" "$ENV" <<'EOF' || fail "hsg or its resources do not come from the wheel"
import sys
from pathlib import Path

checkout, env = (Path(p).resolve() for p in sys.argv[1:3])
import hsg
import hsg.cli
import hsg.db.connection
from hsg.db.cypher import list_queries
from hsg.paths import queries_dir, schema_dir, server_build_dir

found = {
    "hsg": Path(hsg.__file__),
    "hsg.cli": Path(hsg.cli.__file__),
    "hsg.db.connection": Path(hsg.db.connection.__file__),
    "schema": schema_dir(),
    "queries": queries_dir(),
    "server pom.xml": server_build_dir() / "pom.xml",
}
bad = []
for what, path in found.items():
    path = path.resolve()
    if not path.exists():
        bad.append(f"{what}: {path} does not exist")
    elif not path.is_relative_to(env) or path.is_relative_to(checkout / "hsg"):
        bad.append(f"{what}: {path} is not inside the wheel's venv {env}")
if not list(schema_dir().glob("*.cypher")):
    bad.append(f"no schema files in {schema_dir()}")
queries = list_queries()
if not queries:
    bad.append(f"no named queries in {queries_dir()}")
if bad:
    print("\n".join(bad), file=sys.stderr)
    raise SystemExit(1)
print(f"  hsg {hsg.__version__} from {found['hsg']}; {len(queries)} named queries", file=sys.stderr)
EOF

step "hsg --version"
VERSION=$("$HSG" --version) || fail "hsg --version"
echo "  $VERSION" >&2
step "hsg targets --help"
"$HSG" targets --help >"$WORK/targets-help.txt" 2>&1 ||
  { cat "$WORK/targets-help.txt" >&2; fail "hsg targets --help"; }
grep -q -- "--up" "$WORK/targets-help.txt" || fail "hsg targets --help does not list --up"

if [ "$WITH_DB" = 1 ]; then
  step "hsg db init against ${NEO4J_URI:-the default server}"
  "$HSG" db init >"$WORK/db-init.log" 2>&1 || { cat "$WORK/db-init.log" >&2; fail "hsg db init"; }
  step "named query label_composition through the wheel's driver settings"
  "$PY" - <<'EOF' || fail "running the named query label_composition"
import sys

from hsg.db.connection import driver_session
from hsg.db.cypher import load_query
from hsg.db.settings import ConnectionSettings

settings = ConnectionSettings.from_env()
query = load_query("label_composition")
with driver_session(settings) as driver:
    records = driver.execute_query(
        query.text, {"sae": "hsg-wheel-check/none"}, database_=settings.database
    ).records
for row in records:
    if row["encoded"] != 0 or row["activations"] != 0:  # no SAE has this id
        raise SystemExit(f"unexpected row for an SAE that does not exist: {dict(row)}")
print(f"  label_composition: {len(records)} label rows", file=sys.stderr)
EOF
fi

step "passed in $((SECONDS - START)) s"
