"""A Ray that raygan starts on this machine: what it can ever offer, and the settings that keep it quiet.

    capacity()                                        # {"CPU": 2, "GPU": 0, ...}, or None on a cluster
    check_requests([(cfg.scaling, {})], capacity())   # ConfigError naming the scaling key that can never fit

A local Ray has no autoscaler: a request for more CPUs, GPUs or custom resources than the machine has
waits forever, so it is bad input. On a cluster (RAY_ADDRESS, or one that `ray start` runs here) nodes may
come, and waiting for them is right.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable

from raygan import ray_private
from raygan.config import ScalingConfig
from raygan.errors import ConfigError


def joins_cluster() -> bool:
    """Whether `ray.init()` joins a running cluster (RAY_ADDRESS, or the last `ray start` on this machine)
    rather than starting a Ray of its own; Ray's own rule (services.get_ray_address_from_environment)."""
    address = os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        return address != "local"
    return ray_private.bootstrap_address() is not None


def capacity() -> dict[str, float] | None:
    """Everything the Ray that raygan runs on can ever offer, where no autoscaler can add nodes; None on a
    cluster. A session this process started itself (a test's `ray.init(num_cpus=4)`) counts with its
    logical resources; a Ray still to be started, as Ray itself will count this machine (cgroup CPU limits,
    CUDA_VISIBLE_DEVICES, RAY_OVERRIDE_RESOURCES), not os.cpu_count() or torch's GPU count."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources() if ray_private.started_head() else None
    if joins_cluster():
        return None
    return ray_private.local_resources()


def _count(value: float, unit: str) -> str:
    return f"{value:g} {unit}" + ("" if value == 1 else "s")


def unmet_request(s: ScalingConfig, capacity: dict[str, float], share: dict[str, float]) -> tuple[str, str] | None:
    """(scaling key, what is wrong) for the first part of a run's request that `capacity` can never meet:
    num_workers x the per-worker resources, plus `share` (a trial's own). None if it fits."""
    if s.use_gpu and not capacity.get("GPU"):
        return "use_gpu", "true, but this machine has no GPU that Ray can use (RAY_ADDRESS is unset: no cluster)"
    per_worker = {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if s.use_gpu else {})}
    for name, amount in {**per_worker, **s.resources_per_worker}.items():
        has = capacity.get(name, 0)
        if name in per_worker:
            key, unit = f"{name.lower()}s_per_worker", name
        elif not has:
            return f"resources_per_worker.{name}", f"a local Ray has no {name!r} resource (RAY_ADDRESS is unset)"
        else:
            key, unit = f"resources_per_worker.{name}", repr(name)
        if amount > has:
            return key, f"{amount:g} per worker, but this machine has {_count(has, unit)}"
        total = s.num_workers * amount + share.get(name, 0)
        if total > has:
            trial = f" + {share[name]:g} for the trial" if share.get(name) else ""
            return "num_workers", (
                f"{s.num_workers} workers x {_count(amount, unit)}{trial} = {_count(total, unit)}, "
                f"but this machine has {has:g}"
            )
    return None


def check_requests(
    requests: Iterable[tuple[ScalingConfig, dict]], capacity: dict[str, float] | None, share: dict | None = None
) -> None:
    """ConfigError for the first request that `capacity` can never meet (None: a cluster, no check). Each
    request is (scaling, the searched values it comes from: {"scaling.num_workers": 4}); a searched key
    that is wrong is named as tune.search_space.<key>."""
    if capacity is None:
        return
    for scaling, searched in requests:
        unmet = unmet_request(scaling, capacity, share or {})
        if unmet is None:
            continue
        key, message = f"scaling.{unmet[0]}", unmet[1]
        if searched:
            drawn = ", ".join(f"{k}={v}" for k, v in searched.items())
            key = f"tune.search_space.{key}" if key in searched else key
            message += f" (for trials that draw {drawn})"
        raise ConfigError(key, message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def quiet_start():
    """Around `ray.init()`: yields its extra arguments for a local Ray, and sets the environment that the
    Ray processes it starts inherit (restored afterwards: this process needs none of it). It keeps two of
    Ray's own complaints off the terminal; on a cluster it does nothing.

    - Train's placement-group cleaner asks the state API about its controller without an address; with two
      Ray instances on the machine (two runs at once) Ray's auto-detection raises "multiple active Ray
      instances" and the cleaner dies. It gets its own dashboard's address, chosen in advance.
    - Train's preemption watcher polls for nodes that an autoscaler drains, which a local Ray has not; its
      creation logs an E-line from core_worker (max_restarts with arguments in the object store).
    """
    if joins_cluster():
        yield {}
        return
    port = _free_port()
    environment = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}
    if "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in os.environ:
        environment["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    try:
        yield {"dashboard_port": port}
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value
