#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: set up .venv, start a dedicated Neo4j + GDS
# test server (its own home and ports, so a user's graph is never touched), run pytest,
# stop the server, and exit with pytest's status (1 when pytest passed but the import-layer
# contract or the installed-wheel check failed). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1

# Debian's Chromium for the Neo4j Browser rendering test (the test skips without it).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium for the Browser test …" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
    >/dev/null 2>&1 || echo "chromium could not be installed; the Browser render test will skip" >&2
fi

export HSG_HOME="$PWD/.hsg/test-neo4j"
export HSG_BOLT_PORT=${HSG_TEST_BOLT_PORT:-17687}
export HSG_HTTP_PORT=${HSG_TEST_HTTP_PORT:-17474}
export NEO4J_URI="bolt://127.0.0.1:$HSG_BOLT_PORT"
export HSG_TEST_DB=1
unset NEO4J_PASSWORD NEO4J_USER NEO4J_DATABASE

# Checks beside pytest. A failed one fails the run, but pytest still runs so that one
# report shows everything; the failures are listed again at the end.
failed=()
echo "lint-imports: the layers contract in pyproject.toml" >&2
.venv/bin/lint-imports --no-cache --no-logo || failed+=("lint-imports: an import breaks the layers contract in pyproject.toml")

.venv/bin/hsg db start || exit 1
trap '.venv/bin/hsg db stop' EXIT
.venv/bin/hsg db init || exit 1
# hsg as an installed wheel, outside the checkout, against this test server
bash scripts/check_wheel.sh || failed+=("scripts/check_wheel.sh: hsg does not work as an installed wheel")

.venv/bin/python -m pytest "$@"
status=$?
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  [ "$status" = 0 ] && status=1
fi
exit "$status"
