"""`hsg serve`: an HTTP ingestion service that keeps encoders and SAEs loaded.

A thin adapter over `hsg.api`: a job is `hsg.api.ingest` run on a worker thread with the
service's loaded models, its input checked by `hsg.api.validate_regions` before it is
accepted, and its state kept on its (:IngestRun) node (`hsg.graph.jobs`). Modules:
`config` (what a service serves), `auth` (the bearer token), `jobs` (queue and runner),
`metrics` (Prometheus text) and `app` (the FastAPI routes).
"""
