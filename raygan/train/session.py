"""The Ray a command runs on: connected (a cluster) or started here for the length of the command, and
what a run asks of it (storage arguments, one worker's resources).

    with ray_connection([(cfg.scaling, {})]):   # ConfigError first if a local Ray could never fit it
        TorchTrainer(..., run_config=RunConfig(name=name, **ray_storage(storage_path)))

`train`, `bench`, `tune` and `serve` all come in through `ray_connection`; what a local Ray can offer,
and the settings that keep it quiet, are `raygan.train.local_ray`'s.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

import ray

from raygan import storage
from raygan.config import ScalingConfig
from raygan.train import local_ray


@contextlib.contextmanager
def ray_connection(
    requests: Iterable[tuple[ScalingConfig, dict]] = (), share: dict | None = None, log_to_driver: bool = True
) -> Iterator[None]:
    """Ray for the length of a command: the cluster in RAY_ADDRESS (unset: the one `ray start` last started
    on this machine, if any), or a local one. First, on a Ray without an autoscaler (one this call would
    start, or a local session already running), a ConfigError for any `requests` (scaling, searched values)
    it could never meet: Ray would wait for them forever. Disconnects at the end only if it connected (a
    caller's own Ray stays up); disconnecting lets the workers' last log lines arrive before the caller
    prints its result. `log_to_driver=False` keeps the workers' logs in Ray's log files only."""
    local_ray.check_requests(requests, local_ray.capacity(), share)
    if ray.is_initialized():
        yield
        return
    with local_ray.quiet_start() as options:
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=log_to_driver, **options)
    try:
        yield
    finally:
        ray.shutdown()


def ray_storage(storage_path: str) -> dict[str, Any]:
    """RunConfig's storage arguments: object stores through raygan's patient filesystem, whose
    retries carry Ray's own writes (checkpoint registry, experiment state) through an outage."""
    if not storage.is_uri(storage_path):
        return {"storage_path": storage_path}
    fs, path = storage.filesystem(storage_path, patient=True)
    return {"storage_path": path, "storage_filesystem": fs}


def worker_resources(s: ScalingConfig) -> dict[str, float]:
    """One Train worker's resource request; a trial asks for num_workers of these (its bundles).
    `resources_per_worker` adds custom resources, which pin workers to the node types that offer them."""
    gpus = {"GPU": s.gpus_per_worker} if s.use_gpu else {}
    return {"CPU": s.cpus_per_worker, **gpus, **s.resources_per_worker}
