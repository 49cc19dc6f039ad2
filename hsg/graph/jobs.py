"""The ingestion service's jobs, kept on the (:IngestRun) nodes their runs write.

A job is an ingest run that a service accepted: its node exists from submission (status
`queued`), the run itself then MERGEs the same node (`run_id`) and records `running`,
`finished`, `failed` or `cancelled`. Keeping the job's state there rather than in a file of
the service means a restarted service finds its past jobs, and the interrupted ones, in the
same place `hsg db status` and Neo4j Browser look. Jobs carry `service` (the id of the
service that owns them), so two services sharing a database never adopt each other's jobs.
"""

from __future__ import annotations

from typing import Any

import neo4j

CREATE_JOB = """
MERGE (r:IngestRun {id: $id})
ON CREATE SET r += $props
"""

UPDATE_JOB = """
MATCH (r:IngestRun {id: $id})
SET r += $props
"""

LIST_JOBS = """
MATCH (r:IngestRun)
WHERE r.service = $service
RETURN r {.*} AS job
ORDER BY r.submitted, r.id
"""

GET_JOB = """
MATCH (r:IngestRun {id: $id})
WHERE r.service = $service
RETURN r {.*} AS job
"""


def create_job(driver: neo4j.Driver, database: str, job_id: str, props: dict[str, Any]) -> None:
    """The job's node, status `queued`, before its run starts; idempotent."""
    driver.execute_query(CREATE_JOB, id=job_id, props=props, database_=database)


def update_job(driver: neo4j.Driver, database: str, job_id: str, props: dict[str, Any]) -> None:
    """Progress, status or the final summary of a job (scalar properties only)."""
    driver.execute_query(UPDATE_JOB, id=job_id, props=props, database_=database)


def list_jobs(driver: neo4j.Driver, database: str, service: str) -> list[dict[str, Any]]:
    """Every job of this service, oldest first."""
    records = driver.execute_query(
        LIST_JOBS, service=service, database_=database, routing_=neo4j.RoutingControl.READ
    ).records
    return [dict(r["job"]) for r in records]


def get_job(driver: neo4j.Driver, database: str, service: str, job_id: str) -> dict | None:
    records = driver.execute_query(
        GET_JOB, id=job_id, service=service, database_=database,
        routing_=neo4j.RoutingControl.READ,
    ).records  # fmt: skip
    return dict(records[0]["job"]) if records else None
