"""The client of `hsg serve`: submit an ingest job, follow it, get the same summary.

    client = api.ServiceClient("http://gpu-box:8765")      # token: HSG_SERVICE_TOKEN
    summary = client.ingest("loci.tsv", label="cisplatin_binding")
    client.encode(["ACGT" * 30])                           # top features, nothing written

Errors the service reports (bad input, unknown SAE, a wrong token) are `ServiceError`s
(a `ValueError`, as every user error of the library) carrying its message.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hsg.api._ingest import Progress
    from hsg.ingest.pipeline import IngestSummary

TOKEN_ENV = "HSG_SERVICE_TOKEN"
SUBMIT_TIMEOUT = 3600.0  # the service validates the whole input before it answers


class ServiceError(ValueError):
    """What the service answered instead of a result (or that it could not be reached)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServiceClient:
    """A connection to one `hsg serve`: the same ingest as `hsg.api.ingest`, run where the
    models are loaded. The token defaults to ``HSG_SERVICE_TOKEN``."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        token = token or os.environ.get(TOKEN_ENV, "").strip() or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ calls
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach the hsg service at {self.url}: {exc}") from exc
        if response.status_code == 401:
            raise ServiceError(
                f"the service at {self.url} refused the token: set {TOKEN_ENV} (or token=) to "
                "the one in its state dir (.hsg/service/token)",
                401,
            )
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            if not isinstance(detail, str):
                detail = json.dumps(detail)
            raise ServiceError(detail, response.status_code)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def health(self) -> dict:
        return self._call("GET", "/health")

    def metrics(self) -> str:
        return self._call("GET", "/metrics")

    def jobs(self) -> list[dict]:
        return self._call("GET", "/jobs")["jobs"]

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict:
        return self._call("DELETE", f"/jobs/{job_id}")

    def submit(
        self,
        source: str | Path,
        *,
        upload: bool = True,
        annotations: Sequence[str | Path] = (),
        **options: Any,
    ) -> dict:
        """Queue an ingest job; returns the job (its `id` and `status`).

        ``source`` is uploaded, or with ``upload=False`` names a file on the service's
        machine. ``options`` are those of `hsg.api.ingest` (``sae`` names one of the
        service's pairs; ``reference`` one of its references). Local ``annotations`` files
        are uploaded with the input."""
        options = {k: v for k, v in options.items() if v is not None}
        if "label_column" in options:
            options["label_column"] = str(options["label_column"])
        files: list[tuple[str, Any]] = []
        handles = []
        try:
            if upload:
                fh = open(source, "rb")  # noqa: SIM115 - closed below
                handles.append(fh)
                files.append(("file", (Path(source).name, fh)))
            else:
                options["input"] = str(source)
            for path in annotations:
                fh = open(path, "rb")  # noqa: SIM115
                handles.append(fh)
                files.append(("annotations", (Path(path).name, fh)))
            return self._call(
                "POST",
                "/jobs",
                data={"options": json.dumps(options)},
                files=files or None,
                timeout=SUBMIT_TIMEOUT,
            )
        finally:
            for fh in handles:
                fh.close()

    def wait(
        self, job_id: str, progress: Progress | None = None, poll: float = 0.5
    ) -> IngestSummary:
        """Follow a job to its end; its `IngestSummary` when it finished, else `ServiceError`.

        ``progress("ingesting", n, total)`` is called as sequences are done."""
        shown = 0
        while True:
            job = self.job(job_id)
            done = job["progress"]["done"]
            if progress is not None and done > shown:
                progress("ingesting", done - shown, job["progress"]["total"])
                shown = done
            if job["status"] == "finished":
                return summary_from_dict(job["summary"])
            if job["status"] in ("failed", "cancelled"):
                why = f": {job['error']}" if job.get("error") else ""
                raise ServiceError(f"job {job_id} {job['status']}{why}")
            time.sleep(poll)

    def ingest(
        self, source: str | Path, *, progress: Progress | None = None, **options: Any
    ) -> IngestSummary:
        """`submit` then `wait`: what `hsg ingest --server` runs."""
        job = self.submit(source, **options)
        return self.wait(job["id"], progress=progress)

    def encode(
        self,
        sequences: Sequence[str] | Sequence[dict],
        *,
        sae: str | None = None,
        top_k: int = 1,
        min_activation: float = 0.0,
    ) -> list[dict]:
        """Per sequence, its top features per token (`feature, position, token,
        activation, rank`), computed by the service; nothing is written."""
        body = {
            "sequences": list(sequences),
            "sae": sae,
            "top_k": top_k,
            "min_activation": min_activation,
        }
        return self._call("POST", "/encode", json=body)["sequences"]


def summary_from_dict(data: dict) -> IngestSummary:
    from dataclasses import fields

    from hsg.ingest.pipeline import IngestSummary

    known = {f.name for f in fields(IngestSummary)}
    return IngestSummary(**{k: v for k, v in data.items() if k in known})


def remote_ingest(
    server: str,
    source: str | Path,
    *,
    token: str | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> IngestSummary:
    """`hsg.api.ingest` run by a service: upload, wait, return the same summary."""
    with ServiceClient(server, token) as client:
        return client.ingest(source, progress=progress, **options)
