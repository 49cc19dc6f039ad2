"""`GET /metrics`: the service in Prometheus' text format (no client library needed).

Gauges are read from the service at scrape time; the two counters count since start, so a
Prometheus `rate()` over them gives sequences and relationships per second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hsg.service.jobs import RUNNING, STATES

if TYPE_CHECKING:
    from hsg.service.core import Service


def render(service: Service) -> str:
    jobs = list(service.queue.jobs.values())
    lines = [
        "# HELP hsg_jobs Jobs known to the service, by state.",
        "# TYPE hsg_jobs gauge",
    ]
    for state in STATES:
        n = sum(1 for j in jobs if j.status == state)
        lines.append(f'hsg_jobs{{state="{state}"}} {n}')
    running = [j for j in jobs if j.status == RUNNING]
    lines += [
        "# HELP hsg_queue_depth Jobs waiting for the device.",
        "# TYPE hsg_queue_depth gauge",
        f"hsg_queue_depth {service.queue.depth()}",
        "# HELP hsg_sequences_total Sequences read by jobs since the service started.",
        "# TYPE hsg_sequences_total counter",
        f"hsg_sequences_total {service.sequences_done}",
        "# HELP hsg_relationships_total Relationships written by finished jobs since start.",
        "# TYPE hsg_relationships_total counter",
        f"hsg_relationships_total {service.relationships_written}",
        "# HELP hsg_job_sequences_per_second Rate of the running job.",
        "# TYPE hsg_job_sequences_per_second gauge",
        f"hsg_job_sequences_per_second {sum(j.rate for j in running):.3f}",
    ]
    lines += _gpu_lines()
    return "\n".join(lines) + "\n"


def _gpu_lines() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    lines = [
        "# HELP hsg_gpu_memory_allocated_bytes Memory held by tensors, per device.",
        "# TYPE hsg_gpu_memory_allocated_bytes gauge",
    ]
    for i in range(torch.cuda.device_count()):
        lines.append(f'hsg_gpu_memory_allocated_bytes{{device="cuda:{i}"}} '
                     f"{torch.cuda.memory_allocated(i)}")  # fmt: skip
    lines += [
        "# HELP hsg_gpu_memory_reserved_bytes Memory reserved by the caching allocator.",
        "# TYPE hsg_gpu_memory_reserved_bytes gauge",
    ]
    for i in range(torch.cuda.device_count()):
        lines.append(f'hsg_gpu_memory_reserved_bytes{{device="cuda:{i}"}} '
                     f"{torch.cuda.memory_reserved(i)}")  # fmt: skip
    return lines
