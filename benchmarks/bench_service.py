"""The ingestion service against `hsg ingest`: its overhead, and two clients at once.

    python benchmarks/bench_service.py [--data ../shared/data/cisplatin/loci.tsv] [--limit N]
        [--repeat R] [--layers 2 --hidden 32] [--device cpu] [--dtype bf16]

In one run, on a throw-away server (benchmarks/_server.py), the same input is ingested
  * direct  — `hsg ingest FILE --model … --sae …` (a fresh process: loads the model);
  * service — `hsg ingest FILE --server URL` against an `hsg serve` started once before
              (upload, validation, queue, polling included);
and the graph is wiped in between. Printed: wall seconds of each, the ratio service/direct
(end to end), and the ratio of the pipeline's own seconds (the job's summary against the
direct run's), which is the service's overhead on the work itself. Then two clients submit
two halves at once: their sequences per second against one client's. Finally the service
job's tokens per second and, with --peak-tflops, 2 FLOPs per parameter per token at that
rate as a fraction of the peak: a lower bound of the forward passes' share, since the job's
time includes reading, annotating and writing. On a GPU, an NT v2 500M-shape model is
    --layers 29 --hidden 1024 --heads 16 --intermediate 4096 --device cuda --dtype bf16
    --peak-tflops 989   (H100/H200 dense bf16)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import BENCH_HOME, bench_database, wipe  # noqa: E402

from hsg import api  # noqa: E402
from hsg.db.schema import apply_schema  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cisplatin" / "loci.tsv"


def make_pair(
    root: Path, layers: int, hidden: int, heads: int, intermediate: int | None
) -> tuple[Path, Path]:
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    model = api.make_tiny_model(
        root / "model",
        "v2",
        layers=layers,
        hidden=hidden,
        heads=heads,
        intermediate=intermediate,
        seed=0,
    )
    encoder = api.load_encoder(model, device="cpu")
    torch.manual_seed(0)
    cfg = SAEConfig(
        d_in=encoder.hidden_size,
        d_sae=4 * hidden,
        layer=1,
        model_id=encoder.model_id,
        encoder_checkpoint_hash=encoder.checkpoint_hash,
    )
    SparseAutoencoder(cfg).save(root / "sae")
    return model, root / "sae"


def take(data: Path, limit: int | None, out: Path, start: int = 0) -> Path:
    lines = data.read_text().splitlines()
    body = lines[1:][start:][:limit] if limit else lines[1:][start:]
    out.write_text("\n".join([lines[0], *body]) + "\n")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd: list[str], env: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{done.stderr[-3000:]}")
    return wall, json.loads(done.stdout)


def median_run(runs: list[tuple[float, dict]]) -> tuple[float, dict]:
    """The run of median wall time (its own summary with it)."""
    return sorted(runs, key=lambda r: r[0])[len(runs) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=None)
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; medians reported")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    model, sae = make_pair(tmp, args.layers, args.hidden, args.heads, args.intermediate)
    encoder = api.load_encoder(model, device="cpu")
    params = sum(p.numel() for p in encoder.model.parameters())
    data = take(args.data, args.limit, tmp / "input.tsv")
    half = (args.limit or 0) // 2 or None
    first = take(args.data, half, tmp / "first.tsv")
    second = take(args.data, half, tmp / "second.tsv", start=half or 0)
    common = ["--batch-size", str(args.batch_size), "--json"]

    with bench_database() as (driver, settings):
        env = {
            **os.environ,
            "NEO4J_URI": settings.uri,
            "HSG_HOME": str(BENCH_HOME),
            "HSG_SERVICE_TOKEN": "bench-token",
        }
        env.pop("NEO4J_PASSWORD", None)

        def reset() -> None:
            wipe(driver, settings.database)
            apply_schema(driver, settings.database)

        # warm the fresh server (query plans, page cache) so neither side pays for it
        reset()
        warm = take(args.data, 100, tmp / "warm.tsv")
        with api.connection_for(settings) as conn:
            api.ingest(warm, model, sae, connection=conn, device=args.device)

        direct_cmd = [
            sys.executable,
            "-m",
            "hsg",
            "ingest",
            str(data),
            "--model",
            str(model),
            "--sae",
            str(sae),
            "--device",
            args.device,
            *common,
        ]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        serve = [
            sys.executable,
            "-m",
            "hsg",
            "serve",
            "--model",
            str(model),
            "--sae",
            str(sae),
            "--port",
            str(port),
            "--device",
            args.device,
            "--state-dir",
            str(tmp / "state"),
        ]
        if args.dtype:
            serve += ["--dtype", args.dtype]
        t0 = time.perf_counter()
        proc = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(proc.stderr.read().decode()[-3000:])
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            startup = time.perf_counter() - t0
            service_cmd = [sys.executable, "-m", "hsg", "ingest", str(data), "--server", url]
            runs: dict[str, list[tuple[float, dict]]] = {"direct": [], "service": []}
            # alternate (d s s d d s …) so a machine loaded by others weighs on both alike
            for i in range(args.repeat):
                order = ["direct", "service"] if i % 2 == 0 else ["service", "direct"]
                for name in order:
                    reset()
                    cmd = direct_cmd if name == "direct" else [*service_cmd, *common]
                    runs[name].append(timed(cmd, env))
            direct_wall, direct = median_run(runs["direct"])
            service_wall, service = median_run(runs["service"])
            assert service["sequences_encoded"] == direct["sequences_encoded"]
            assert service["relationships_created"] == direct["relationships_created"]

            # two clients at once, each half of the input
            reset()
            results: dict[str, float] = {}

            def client(name: str, path: Path) -> None:
                with api.ServiceClient(url, "bench-token") as c:
                    c.ingest(path, batch_size=args.batch_size)
                results[name] = time.perf_counter()

            t0 = time.perf_counter()
            threads = [
                threading.Thread(target=client, args=(n, p))
                for n, p in (("a", first), ("b", second))
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            two_wall = max(results.values()) - t0
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    n = direct["sequences_read"]
    tokens = sum(
        len(encoder.tokenizer.encode(r.sequence, name=r.id).ids) for r in api.iter_regions(data)
    )
    tokens_per_s = tokens / service["seconds"]
    flops = 2 * params * tokens_per_s
    print(
        f"input: {n} sequences of {args.data.name}; tiny NT v2 ({args.layers} layers, "
        f"hidden {args.hidden}) on {args.device}; service start-up {startup:.1f} s"
    )
    print(f"medians of {args.repeat} alternating runs each")
    print(f"{'':28}{'wall s':>9}{'pipeline s':>12}{'seq/s':>9}")
    print(
        f"{'hsg ingest (direct)':28}{direct_wall:9.2f}{direct['seconds']:12.2f}"
        f"{n / direct_wall:9.0f}"
    )
    print(
        f"{'hsg ingest --server':28}{service_wall:9.2f}{service['seconds']:12.2f}"
        f"{n / service_wall:9.0f}"
    )
    print(f"service/direct, end to end:  {service_wall / direct_wall:.2f}x")
    print(
        f"service/direct, pipeline:    {service['seconds'] / direct['seconds']:.2f}x "
        "(the service's overhead on the ingest itself)"
    )
    print(
        f"two clients at once: {n / two_wall:.0f} seq/s in {two_wall:.2f} s "
        f"({(n / two_wall) / (n / service_wall):.2f}x one client; jobs queue on one device)"
    )

    print(
        f"service job: {tokens} tokens in {service['seconds']:.2f} s = {tokens_per_s:,.0f} "
        f"tokens/s, {flops / 1e12:.3f} TFLOP/s of forward passes ({params / 1e6:.1f} M params)"
        + (f" = {flops / 1e12 / args.peak_tflops:.1%} of peak" if args.peak_tflops else "")
    )


if __name__ == "__main__":
    main()
