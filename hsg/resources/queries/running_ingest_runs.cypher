// description: Ingest runs whose (:IngestRun) node still says status "running", oldest first: runs in progress, and runs whose process died before it could say otherwise. host and pid name the process that writes the run where the run recorded them (null otherwise); `hsg db status` calls a run stale when that process is gone.
// params:
MATCH (r:IngestRun {status: 'running'})
RETURN r.id AS id, r.started AS started, r.input AS input, r.host AS host, r.pid AS pid
ORDER BY started ASC, id ASC
