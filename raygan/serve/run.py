"""What `raygan serve` runs: check the checkpoint and the port, start Ray and Serve, wait for Ctrl-C.

    raygan serve ~/raygan_results/emoji --port 8000 --replicas 2

Bad input (a missing or crafted checkpoint, a port in use) is a UserError before Ray starts. On a
cluster (RAY_ADDRESS) the application is deployed there, and Ctrl-C deletes it and leaves the cluster's
Serve running; a local Ray and its Serve are shut down.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable

from raygan.checkpoint import load_generator
from raygan.errors import UserError
from raygan.train import local_ray

APP_NAME = "raygan"
LOOPBACK = "127.0.0.1"


def check_port(host: str, port: int) -> None:
    """UserError if this machine cannot listen on host:port (in use, or not one of its addresses)."""
    if not 0 < port < 65536:
        raise UserError(f"--port: must be in 1..65535, got {port}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UserError(f"--port/--host: cannot listen on {host}:{port} ({e.strerror})") from None


def wait_for_stop() -> None:
    """Until SIGINT (Ctrl-C) or SIGTERM; the handlers before are put back."""
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_checkpoint(
    source: str,
    host: str = LOOPBACK,
    port: int = 8000,
    replicas: int = 1,
    max_n: int | None = None,
    batch_requests: int | None = None,
    max_replicas: int | None = None,
    announce: Callable[[str], None] = print,
    until: Callable[[], None] = wait_for_stop,
) -> dict:
    """Serve the generator of `source` (a checkpoint, run or sweep, local or s3://) until `until` returns;
    `announce` gets the line with the URL. Returns the model's /info."""
    if replicas < 1:
        raise UserError(f"--replicas: must be at least 1, got {replicas}")
    for flag, value in (("--max-n", max_n), ("--batch", batch_requests)):
        if value is not None and value < 1:
            raise UserError(f"{flag}: must be at least 1, got {value}")
    if max_replicas is not None and max_replicas < replicas:
        raise UserError(f"--max-replicas: must be at least --replicas ({replicas}), got {max_replicas}")
    _, cfg, meta = load_generator(source)  # a missing or crafted checkpoint stops here, before Ray starts
    on_cluster = local_ray.joins_cluster()
    if not on_cluster:
        check_port(host, port)

    from ray import serve

    from raygan.serve.app import BATCH_REQUESTS, MAX_N, application, model_info
    from raygan.train.session import ray_connection

    info = model_info(cfg, meta, max_n or MAX_N)
    app = application(meta["checkpoint"], replicas, max_n or MAX_N, batch_requests or BATCH_REQUESTS, max_replicas)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's progress lines; the URL line says it all
    with ray_connection(log_to_driver=False):  # the replicas' logs stay in Ray's log folder, off the terminal
        serve.start(http_options={"host": host, "port": port})
        try:
            serve.run(app, name=APP_NAME, route_prefix="/")
            scale = replicas if max_replicas is None else f"{replicas}-{max_replicas}"
            classes = f"{info['classes']} classes" if info["classes"] else "unconditional"
            fid = "unscored" if info["fid"] is None else f"FID {info['fid']:.3f}"
            announce(
                f"serving {meta['checkpoint']} (step {info['step']}, {fid}; {info['channels']}x{info['resolution']}"
                f"x{info['resolution']}, {classes}; {scale} replica(s)) at http://{_url_host(host)}:{port}/"
                " (Ctrl-C stops)"
            )
            until()
        finally:
            if on_cluster:
                serve.delete(APP_NAME)  # the cluster's other applications keep serving
            else:
                serve.shutdown()
    return info


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host
