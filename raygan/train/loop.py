"""The training loop around `GANEngine.train_step`: data, cadence, progress; its host comes in as hooks.

    summary = train_loop(engine, batches, cfg, report=my_report)   # batches(k) -> (images, labels)

No Ray import: `raygan.train.ray_train` passes hooks that call `ray.train.report`; tests and
benchmarks pass plain functions. The same code serves `train` and `bench`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from raygan.collectives import all_reduce_mean
from raygan.config import Config, TrainConfig
from raygan.metrics.health import HealthMonitor
from raygan.train.step import Batch, GANEngine
from raygan.train.train_report import TrainReport

ReportFn = Callable[[TrainReport, bool], None]  # (report, with_checkpoint); every rank calls it equally often


def is_due(step: int, every: int, last: int) -> bool:
    return step % every == 0 or step == last


def run_progress(t: TrainConfig, step: int, trained_s: float) -> float:
    """How far through its run (0 to 1) a run is: by steps, or by seconds of training where
    train.time_budget_s would end it first."""
    by_time = trained_s / t.time_budget_s if t.time_budget_s else 0.0
    return min(1.0, max(step / t.steps, by_time))


def format_progress(step: int, last: int, metrics: dict, eta_s: float) -> str:
    losses = "  ".join(f"{name} {value:.3f}" for name, value in metrics.items() if name.endswith("_loss"))
    fid = f"  fid {metrics['fid']:.2f}" if metrics.get("evaluated") else ""
    eta = time.strftime("%H:%M:%S", time.gmtime(max(eta_s, 0)))
    return f"step {step}/{last}  {metrics['images_per_s']:.0f} img/s  {losses}{fid}  eta {eta}"


def format_timing(t: dict) -> str:
    """One line from `raygan.train.ray_train.timing`: launch to first step, then where the loop's time went."""
    parts = {"steps": "steps", "eval": "evaluation", "report": "reports and checkpoints", "data": "data"}
    split = ", ".join(f"{label} {100 * t[f'{part}_s'] / max(t['loop_s'], 1e-9):.0f}%" for part, label in parts.items())
    first = "" if t["startup_s"] is None else f"first step {t['startup_s']:.0f} s after launch; "
    return f"time: {first}training loop {t['loop_s']:.0f} s: {split}"


def train_loop(
    engine: GANEngine,  # built, restored from a checkpoint if resuming
    batches: Callable[[int], Batch],  # k -> this rank's part of global real batch k
    cfg: Config,
    report: ReportFn,  # at report/eval/checkpoint steps, the metrics since the last call; evaluated: scored now
    evaluate: Callable[[GANEngine], dict] | None = None,  # -> fid, kid, modes ...; all ranks call it
    monitor: HealthMonitor | None = None,  # judges each evaluation; may stop the run
    progress: Callable[[str], None] | None = None,  # rank 0's progress lines
    checkpoints: bool = True,  # False for benchmarks
    last_step: int | None = None,  # default cfg.train.steps
    time_budget_s: float | None = None,  # stop once engine.trained_s reaches it, evaluated and checkpointed
) -> dict:
    """Run from `engine.step` to `last_step` (or a health or budget stop); returns where the time went, in seconds."""
    t = cfg.train
    last = last_step or t.steps
    step_times: list[float] = []  # data + step, per step
    spent = {"data": 0.0, "steps": 0.0, "eval": 0.0, "report": 0.0}  # report includes checkpoints
    first_step_at = None  # wall clock, for "Ray start to first step"
    window_start, window_steps = time.perf_counter(), 0
    run_start = time.perf_counter()
    previous_s = engine.trained_s  # a resumed run's budget counts the seconds it trained before
    while engine.step < last:
        start = time.perf_counter()
        first_batch = engine.step * t.n_critic
        real = [batches(first_batch + i) for i in range(t.n_critic)]
        fetched = time.perf_counter()
        engine.train_step(real)
        step_times.append(time.perf_counter() - start)
        spent["data"] += fetched - start
        spent["steps"] += step_times[-1] - (fetched - start)
        first_step_at = first_step_at or time.time()
        window_steps += 1
        step = engine.step
        out_of_time = False
        if time_budget_s is not None and is_due(step, t.report_every, last):  # ranks decide together, at a report
            engine.trained_s = all_reduce_mean(
                torch.tensor(previous_s + time.perf_counter() - run_start, dtype=torch.float64)
            ).item()
            out_of_time = engine.trained_s >= time_budget_s
        else:
            engine.trained_s = previous_s + time.perf_counter() - run_start
        if is_due(step, t.report_every, last):  # where the ranks agree on trained_s
            engine.set_progress(run_progress(t, step, engine.trained_s))
        evaluating = evaluate is not None and (is_due(step, t.eval_every, last) or out_of_time)  # the run is scored
        checkpointing = checkpoints and (is_due(step, t.checkpoint_every, last) or out_of_time)
        if not (evaluating or checkpointing or out_of_time or is_due(step, t.report_every, last)):
            continue
        elapsed = time.perf_counter() - window_start
        metrics = engine.pop_metrics()
        if evaluating or checkpointing:
            prepare_start = time.perf_counter()
            engine.average_buffers()
            engine.recalibrate_sampler()
            spent["eval"] += time.perf_counter() - prepare_start  # the sampler is made ready for evaluation
        metrics.update(step=step, images_per_s=window_steps * t.batch_size * t.n_critic / elapsed, evaluated=evaluating)
        stopping = out_of_time
        if evaluating:
            eval_start = time.perf_counter()
            metrics.update(evaluate(engine))
            spent["eval"] += time.perf_counter() - eval_start
            if monitor is not None:
                metrics.update(monitor.observe(step, metrics))
                if out_of_time:
                    monitor.stop(
                        f"time budget: {engine.trained_s:.0f} s of training (train.time_budget_s {time_budget_s:g})"
                    )
                metrics["health"] = monitor.summary(metrics)
                stopping = monitor.stop_reason is not None
                checkpointing = checkpoints and (checkpointing or bool(metrics["new_best"]) or stopping)
        if progress is not None:
            rate = (time.perf_counter() - run_start) / max(len(step_times), 1)
            progress(format_progress(step, last, metrics, rate * (last - step)))
            if stopping:
                reason = monitor.stop_reason if monitor is not None else "time budget"
                progress(f"stopping at step {step}: {reason}")
        report_start = time.perf_counter()
        metrics.update(trained_s=engine.trained_s, images_seen=step * t.batch_size)  # the run's cost so far
        report(metrics, checkpointing)
        spent["report"] += time.perf_counter() - report_start
        window_start, window_steps = time.perf_counter(), 0
        if stopping:
            break
    return {
        "step_times": step_times,
        "seconds": spent,
        "wall": time.perf_counter() - run_start,
        "first_step_at": first_step_at,
    }
