"""The HTTP routes of `hsg serve` (OpenAPI at /docs): each one a call into `Service`.

Every route but `/health` needs `Authorization: Bearer <token>` (401 without it). Errors a
client can cause answer 4xx with the message `hsg ingest` would print; nothing is stored
for a rejected job.
"""

from __future__ import annotations

import json
import re
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from hsg.service import metrics
from hsg.service.auth import check_bearer
from hsg.service.core import Service, ServiceError
from hsg.service.jobs import JobOptions

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class EncodeSequence(BaseModel):
    id: str | None = None
    sequence: str


class EncodeRequest(BaseModel):
    sequences: list[EncodeSequence | str] = Field(description="sequences, or {id, sequence}")
    sae: str | None = Field(None, description="the pair's name (default: the first one)")
    top_k: int = 1
    min_activation: float = 0.0


def create_app(service: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.start()
        yield
        service.close()

    app = FastAPI(
        title="hsg ingestion service",
        description="Encode regions through NT + SAE and write the knowledge graph.",
        lifespan=lifespan,
    )

    def authorized(request: Request) -> None:
        if not check_bearer(request.headers.get("authorization"), service.token):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    auth = [Depends(authorized)]

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.get("/health")
    def health() -> dict:
        """Models loaded, device, Neo4j reachable; no token needed."""
        return service.health()

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=auth)
    def get_metrics() -> str:
        return metrics.render(service)

    @app.post("/jobs", status_code=202, dependencies=auth)
    def submit(
        options: Annotated[str, Form(description="JSON: the options of `hsg ingest`")] = "{}",
        file: Annotated[UploadFile | None, File(description="the regions file")] = None,
        annotations: Annotated[list[UploadFile] | None, File()] = None,
    ) -> dict:
        """Validate the whole input, store the job, queue it; answers its id at once.

        Without `file`, `options.input` is a path on the service's machine."""
        from hsg.ingest.pipeline import new_run_id

        try:
            opts = JobOptions.from_dict(json.loads(options))
        except (ValueError, TypeError) as exc:
            raise ServiceError(400, f"bad options: {exc}") from exc
        job_id = new_run_id()
        upload_dir = None
        if file is not None or annotations:
            upload_dir = service.new_job_dir(job_id)
            try:
                limit = int(service.config.max_upload_mb * 1024 * 1024)
                if file is not None:
                    opts.input = str(_save(file, upload_dir, "input", limit))
                if annotations:
                    opts.annotations = [
                        str(_save(a, upload_dir, f"annotations{i}", limit))
                        for i, a in enumerate(annotations)
                    ]
            except ServiceError:
                import shutil

                shutil.rmtree(upload_dir, ignore_errors=True)
                raise
        elif not opts.input:
            raise ServiceError(400, "give the regions as an upload (file) or options.input")
        return service.submit(job_id, opts, upload_dir).to_dict()

    @app.get("/jobs", dependencies=auth)
    def list_jobs() -> dict:
        return {"jobs": [j.to_dict() for j in list(service.queue.jobs.values())]}

    @app.get("/jobs/{job_id}", dependencies=auth)
    def get_job(job_id: str) -> dict:
        return service.job(job_id).to_dict()

    @app.delete("/jobs/{job_id}", status_code=202, dependencies=auth)
    def cancel_job(job_id: str) -> dict:
        """Cancel: a queued job at once, a running one at its next batch boundary."""
        return service.cancel(job_id).to_dict()

    @app.post("/encode", dependencies=auth)
    def encode(request: EncodeRequest) -> dict:
        """Top features per token of a few sequences; nothing is written."""
        sequences = [
            {"sequence": s} if isinstance(s, str) else s.model_dump() for s in request.sequences
        ]
        results = service.encode(sequences, request.sae, request.top_k, request.min_activation)
        return {"sae": service.pair(request.sae).cfg.name, "sequences": results}

    return app


def _save(upload: UploadFile, directory: Path, stem: str, limit: int) -> Path:
    """Copy an upload into the job's folder, keeping its extensions (the format, `.gz`)."""
    name = _SAFE_NAME.sub("_", Path(upload.filename or stem).name) or stem
    path = directory / f"{stem}-{name}"
    size = 0
    with open(path, "wb") as out:
        while chunk := upload.file.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise ServiceError(
                    413, f"upload {upload.filename} is larger than the service's limit "
                    f"({limit // (1024 * 1024)} MB, max_upload_mb)",
                )  # fmt: skip
            out.write(chunk)
    return path
