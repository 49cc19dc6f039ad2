#!/usr/bin/env bash
# The main job on a built-in default, from a fresh machine: set up .venv, start the local
# Neo4j + GDS server, and run `hsg demo` (tiny model → SAE → ingest → summary).
# Extra arguments go to `hsg demo`, e.g. --data ../shared/data/cisplatin/loci.tsv
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hsg demo "$@"
