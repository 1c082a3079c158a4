"""`raygan serve` under load: requests per second and p50 / p99 latency of GET /sample over loopback.

    .venv/bin/python benchmarks/serve.py [CHECKPOINT_OR_RUN] [--requests 200] [--seconds 20] [--out FILE.json]

For n=1 and n=64 images per request, at 1, 8 and 32 concurrent clients (threads, one keep-alive session
each), with request batching on the replica (@serve.batch, 8 requests per forward) and without (1). Each
cell stops at --requests requests or --seconds seconds, whichever comes first, after a few warm-up
requests. Without a checkpoint, an untrained generator of the emoji recipe (32x32x3, 9 classes; drawing
time does not depend on training) is written to a temporary folder. One replica, a local Ray.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SIZES = (1, 64)
CLIENTS = (1, 8, 32)
BATCHING = {"batched": 8, "unbatched": 1}
WARMUP = 4


def untrained_checkpoint(folder: Path) -> str:
    from raygan.checkpoint import checkpoint_name, write_checkpoint
    from raygan.config import load_config
    from raygan.train.step import GANEngine

    cfg = load_config(str(Path(__file__).parents[1] / "tune_configs" / "emoji.yaml"), ["model.conditional=true"])
    engine = GANEngine(cfg, 3, 9, "cpu")
    return str(write_checkpoint(folder / checkpoint_name(0), engine, cfg, {"fid": None}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(url: str, n: int, clients: int, requests_cap: int, seconds: float) -> dict:
    """`clients` threads sending GET /sample?n=..&seed=i until the cap; latency of each request."""
    import requests

    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))
    latencies: list[float] = []

    def client(_: int) -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            seed = next(counter)
            if seed >= requests_cap:
                return
            started = time.perf_counter()
            response = session.get(url, params={"n": n, "seed": seed}, timeout=120)
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "requests_per_s": len(ordered) / elapsed,
        "images_per_s": n * len(ordered) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="default: an untrained emoji-recipe generator")
    parser.add_argument("--requests", type=int, default=200, help="most requests per cell")
    parser.add_argument("--seconds", type=float, default=20, help="most seconds per cell")
    parser.add_argument("--out", help="write the rows as JSON here too")
    args = parser.parse_args()

    import ray
    import requests
    from ray import serve

    from raygan.serve.app import application
    from raygan.train.local_ray import quiet_start

    rows = []
    with tempfile.TemporaryDirectory(prefix="raygan-serve-bench-") as tmp:
        checkpoint = args.checkpoint or untrained_checkpoint(Path(tmp))
        port = free_port()
        with quiet_start() as options:
            ray.init(log_to_driver=False, **options)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            for mode, batch in BATCHING.items():
                serve.run(application(checkpoint, batch_requests=batch), name="bench", route_prefix="/")
                url = f"http://127.0.0.1:{port}/sample"
                for n in SIZES:
                    for _ in range(WARMUP):
                        requests.get(url, params={"n": n}, timeout=120).raise_for_status()
                    for clients in CLIENTS:
                        row = {
                            "mode": mode,
                            "n": n,
                            "clients": clients,
                            **load(url, n, clients, args.requests, args.seconds),
                        }
                        rows.append(row)
                        print(
                            json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}),
                            flush=True,
                        )
                serve.delete("bench")
        finally:
            serve.shutdown()
            ray.shutdown()

    print("\n| n | clients | batched: req/s | p50 ms | p99 ms | unbatched: req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for n in SIZES:
        for clients in CLIENTS:
            cells = []
            for mode in BATCHING:
                row = next(r for r in rows if (r["mode"], r["n"], r["clients"]) == (mode, n, clients))
                cells += [f"{row['requests_per_s']:.1f}", f"{row['p50_ms']:.0f}", f"{row['p99_ms']:.0f}"]
            print(f"| {n} | {clients} | " + " | ".join(cells) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
