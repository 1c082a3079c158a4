"""`raygan bench`: the time of real training steps on the configured Ray Train workers, through the same
trainer, workers and loop as a run (no evaluation, no checkpoints).

    result = bench(cfg, steps=20, storage_path="/tmp/bench", name="bench")   # images_per_s, step_s, ...
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch

from raygan import storage
from raygan.collectives import all_reduce_mean
from raygan.config import Config
from raygan.models import count_parameters
from raygan.train import session
from raygan.train.loop import train_loop
from raygan.train.ray_train import Worker, start_worker, timing, trainer
from raygan.train.step import GANEngine, unwrap

BENCH_WARMUP_STEPS = 3
BENCH_WARMUP_S = 5.0
BENCH_LOOP = {"report": lambda metrics, checkpoint: None, "checkpoints": False}


def bench(cfg: Config, steps: int, storage_path: str, name: str, started_at: float | None = None) -> dict:
    """Times `steps` real training steps (after a short warm-up) on the configured workers."""
    storage.check_name(name)
    with session.ray_connection([(cfg.scaling, {})]):
        run = trainer(
            cfg, name, storage_path, started_at=started_at, worker=bench_worker, worker_options={"bench_steps": steps}
        )
        return run.fit().return_value


def bench_worker(loop_config: dict[str, Any]) -> dict:
    """`train_loop_per_worker` of a bench: a run's worker, timed instead of trained; rank 0's result is
    Result.return_value."""
    return time_steps(start_worker(loop_config), loop_config["bench_steps"], loop_config["started_at"])


def time_steps(worker: Worker, steps: int, started_at: float) -> dict:
    """Time of `steps` real training steps after a warm-up (the median step on CPUs, the synchronised mean
    on GPUs)."""
    engine, batches, cfg = worker.engine, worker.batches, worker.cfg
    warm_up = _warm_up(engine, batches, cfg)
    cuda = engine.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    timed = train_loop(engine, batches, cfg, **BENCH_LOOP, last_step=engine.step + steps)
    if cuda:  # the host runs ahead of the device: there only the synchronised wall time is honest
        torch.cuda.synchronize()
        step_s = (time.perf_counter() - start) / steps
    else:
        step_s = statistics.median(timed["step_times"])
    return {
        **timing(warm_up, started_at),
        "step_s": step_s,
        "images_per_s": cfg.train.batch_size * cfg.train.n_critic / step_s,
        "params_G": count_parameters(unwrap(engine.G)),
        "params_D": count_parameters(unwrap(engine.adversaries[0].net)),
        "workers": worker.world_size,
    }


def _warm_up(engine: GANEngine, batches, cfg: Config) -> dict:
    """At least BENCH_WARMUP_STEPS steps and BENCH_WARMUP_S seconds: the processes Ray starts beside
    a new run (its controller, idle workers) compete for the CPUs for the first seconds."""
    first = train_loop(engine, batches, cfg, **BENCH_LOOP, last_step=engine.step + BENCH_WARMUP_STEPS)
    per_step = all_reduce_mean(torch.tensor(first["wall"] / BENCH_WARMUP_STEPS)).item()  # same count on every rank
    more = math.ceil(max(0.0, BENCH_WARMUP_S - first["wall"]) / per_step)
    if more:
        train_loop(engine, batches, cfg, **BENCH_LOOP, last_step=engine.step + more)
    return first
