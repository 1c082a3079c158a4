"""The thin Ray Train adapter: runs `train_loop` on `TorchTrainer` workers with DDP.

    result = fit(cfg, name="smoke", storage_path="/tmp/runs")   # ray.train.Result

Rank 0 writes checkpoints; every rank reports at the same steps (Ray's report is a barrier).
Running again with the same name and storage resumes from the latest checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from ray.train.v2.api.config import LoggingConfig

from raygan import storage
from raygan.checkpoint import STATE, checkpoint_name, safe_load, upload_order, write_checkpoint
from raygan.collectives import all_reduce_mean
from raygan.config import Config, ScalingConfig, build_config
from raygan.data import indexed_batches, load_dataset
from raygan.data.stream import StreamedBatches, folder_dataset, in_memory
from raygan.errors import first_line
from raygan.images import grid_array, png_bytes
from raygan.metrics.evaluator import Evaluator
from raygan.metrics.health import HealthMonitor
from raygan.models import count_parameters
from raygan.train import local_ray
from raygan.train.loop import train_loop
from raygan.train.runlog import RunLog, grid_latents
from raygan.train.step import GANEngine, unwrap

BENCH_WARMUP_STEPS = 3
BENCH_WARMUP_S = 5.0
BENCH_LOOP = {"report": lambda metrics, checkpoint: None, "checkpoints": False}
STORAGE_PATIENCE_S = 900  # a checkpoint waits this long for unreachable storage before the run fails
STORAGE_RETRY_S = 5
UNSCORED_FID = 1e9  # Ray's score for a checkpoint taken between evaluations: last (Ray keeps scores in JSON, no inf)


# BatchNorm buffers stay per rank during steps (no broadcast before every forward: four fewer
# collectives per step); GANEngine.average_buffers makes them equal before evaluations and checkpoints.
DDP_OPTIONS: dict[str, Any] = {"broadcast_buffers": False}


def _prepare(module: torch.nn.Module) -> torch.nn.Module:
    return ray.train.torch.prepare_model(module, move_to_device=False, parallel_strategy_kwargs=DDP_OPTIONS)


def ray_metrics(metrics: dict, with_checkpoint: bool) -> dict:
    """What Ray gets: it ranks checkpoints by "fid", so one without an evaluation gets UNSCORED_FID there
    (and only there: its meta.json says fid null, and metrics.jsonl has no FID for that step)."""
    if with_checkpoint and "fid" not in metrics:
        return {**metrics, "fid": UNSCORED_FID}
    return metrics


def _quiet_report_log() -> None:
    """Ray logs every report, metrics and all, at INFO under a logger named by its file path."""
    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def train_worker(loop_config: dict[str, Any]) -> dict | None:
    """`train_loop_per_worker`: loop_config holds the resolved config and the mode (train | bench)."""
    _quiet_report_log()
    cfg = build_config(loop_config["config"])
    bench_steps = loop_config.get("bench_steps")
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    device = ray.train.torch.get_device()
    if loop_config.get("stream"):  # a folder too large for memory, through Ray Data, a shard per worker
        channels, num_classes = cfg.data.channels, loop_config["num_classes"]
        batches = StreamedBatches(ray.train.get_dataset_shard("train"), cfg.train.batch_size // world_size, cfg.seed)
    else:
        dataset = load_dataset(cfg.data, seed=cfg.seed)
        channels, num_classes = dataset.channels, dataset.num_classes
        batches = indexed_batches(dataset, cfg.train.batch_size, cfg.seed, rank, world_size)
        if rank == 0 and dataset.skipped:
            _write_line(f"skipped {dataset.skipped} undecodable files in {cfg.data.path}")
    engine = GANEngine(cfg, channels, num_classes, device, _prepare, rank, world_size)
    if rank == 0 and cfg.train.amp and engine.amp_dtype is None:
        _write_line(f"train.amp {cfg.train.amp}: this CPU has no {cfg.train.amp} instructions; training in float32")

    if bench_steps is not None:
        return _bench(engine, batches, cfg, bench_steps, world_size, loop_config["started_at"])

    bounded_d_loss = math.isfinite(engine.adversaries[0].spec.loss.d_min)  # D's loss has a floor (not a critic's)
    monitor = HealthMonitor(cfg.health, cfg.train.stop_on, cfg.train.patience, bounded_d_loss)
    checkpoint = ray.train.get_checkpoint()  # this run's latest (after a failure or a re-run)
    if checkpoint is None and loop_config.get("resume_from"):  # another run's (a PBT exploit)
        checkpoint = ray.train.Checkpoint(loop_config["resume_from"])
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = safe_load(Path(folder) / STATE)
        engine.load_state_dict(state)
        if "health" in state:
            monitor.load_state_dict(state["health"])
        if rank == 0:
            _write_line(f"resumed from step {engine.step}")
    evaluate = Evaluator(cfg, channels, num_classes, rank, world_size, loop_config["storage_root"], device)
    if rank == 0:
        _write_line("real statistics " + ("computed and cached" if evaluate.real_computed else "read from the cache"))
    run_log = RunLog(loop_config["run_uri"], engine.step) if rank == 0 else None
    grid_z, grid_labels, grid_columns = grid_latents(cfg, num_classes)

    def report(metrics: dict, with_checkpoint: bool) -> None:
        grid = None
        if rank == 0:
            if metrics["evaluated"]:  # the fixed-latent grid goes with each evaluation
                grid = grid_array(engine.generate(grid_z, grid_labels), grid_columns)
            run_log.record(metrics, grid)
        if with_checkpoint and rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                grid_png = png_bytes(grid) if grid is not None else None
                write_checkpoint(Path(folder), engine, cfg, metrics, {"health": monitor.state_dict()}, grid_png)
                ray.train.report(
                    ray_metrics(metrics, with_checkpoint),
                    checkpoint=ray.train.Checkpoint.from_directory(folder),
                    checkpoint_dir_name=checkpoint_name(engine.step),
                    checkpoint_upload_fn=upload_checkpoint,
                )
        else:
            ray.train.report(ray_metrics(metrics, with_checkpoint))  # the same metrics as rank 0's

    progress = _write_line if rank == 0 else None
    summary = train_loop(
        engine,
        batches,
        cfg,
        report=report,
        evaluate=evaluate,
        monitor=monitor,
        progress=progress,
        time_budget_s=cfg.train.time_budget_s,
    )
    if run_log is not None:
        run_log.close()
    if rank == 0 and getattr(batches, "skipped", 0):
        _write_line(f"skipped {batches.skipped} undecodable files in {cfg.data.path}")
    return timing(summary, loop_config["started_at"])


def timing(summary: dict, started_at: float) -> dict:
    """Where a run's time went (Result.return_value): launch to first step, and the loop's split."""
    first = summary["first_step_at"]
    return {
        "startup_s": None if first is None else first - started_at,
        "loop_s": summary["wall"],
        **{f"{part}_s": seconds for part, seconds in summary["seconds"].items()},
    }


def upload_checkpoint(checkpoint: ray.train.Checkpoint, dir_name: str) -> ray.train.Checkpoint:
    """Ray's checkpoint_upload_fn: file by file, manifest last; while storage is unreachable (an S3
    outage) wait and retry instead of failing the run. Training pauses meanwhile; nothing is lost."""
    context = ray.train.get_context().get_storage()
    fs, dest = context.storage_filesystem, context.build_checkpoint_path_from_name(dir_name)
    files = upload_order(Path(checkpoint.path))
    deadline, waited = time.monotonic() + STORAGE_PATIENCE_S, False
    while True:
        try:
            for file in files:
                storage.write_file(fs, storage.join(dest, file.name), file.read_bytes())
            break
        except OSError as e:
            if time.monotonic() > deadline:
                raise
            if not waited:
                _write_line(f"warning: storage unreachable, {dir_name} waits for it ({first_line(e)[:160]})")
                waited = True
            time.sleep(STORAGE_RETRY_S)
    if waited:
        _write_line(f"storage reachable again: {dir_name} written")
    return ray.train.Checkpoint(dest, fs)


def _bench(engine: GANEngine, batches, cfg: Config, steps: int, world_size: int, started_at: float) -> dict:
    """Time of `steps` real training steps after a warm-up (the median step on CPUs, the synchronised mean
    on GPUs); Result.return_value (rank 0's)."""
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
        "workers": world_size,
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


def _write_line(line: str) -> None:
    # sys.stdout, not print: Ray Train patches print() into its logger, which echoes each line twice
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


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


def trainer(
    cfg: Config,
    name: str,
    storage_path: str,
    bench_steps: int | None = None,  # time this many steps instead of training
    callbacks: list | None = None,  # Ray Train callbacks (the sweep's link to Tune)
    resume_from: str | None = None,  # a checkpoint of another run to start from
    cache_root: str | None = None,  # where real statistics are cached; default storage_path
    started_at: float | None = None,  # wall clock the user launched at; default now
):
    storage.check_name(name)
    s = cfg.scaling
    datasets = {}
    loop_config = {
        "config": cfg.to_dict(),
        "bench_steps": bench_steps,
        "resume_from": resume_from,
        "storage_root": cache_root or storage_path,
        "run_uri": storage.join(storage_path, name),
        "started_at": started_at or time.time(),
    }
    if cfg.data.name == "folder" and not in_memory(cfg.data):
        datasets["train"], info = folder_dataset(cfg.data)
        loop_config.update(stream=True, num_classes=max(1, len(info.class_names)))
    resources = worker_resources(s)
    return ray.train.torch.TorchTrainer(
        train_worker,
        train_loop_config=loop_config,
        datasets=datasets,
        scaling_config=ray.train.ScalingConfig(
            num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=name,
            **ray_storage(storage_path),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(  # the best by FID, and always the latest
                num_to_keep=cfg.train.keep_checkpoints, checkpoint_score_attribute="fid", checkpoint_score_order="min"
            ),
            logging_config=LoggingConfig(log_level="WARNING"),  # keep progress lines readable
            callbacks=callbacks,
        ),
    )


def fit(cfg: Config, name: str, storage_path: str, started_at: float | None = None):
    """One training run (resumed if `storage_path/name` holds checkpoints); returns Ray's Result.

    With `logging` set, the run is opened in the trackers before Ray starts and every report is
    logged from here, the driver (see raygan/tracking.py).
    """
    from raygan import tracking

    run_uri = storage.join(storage_path, storage.check_name(name))  # before the trackers open a run
    tracker = tracking.RunTracker(cfg, name, run_uri) if tracking.enabled(cfg.logging) else None
    result = None
    try:
        with ray_connection([(cfg.scaling, {})]):
            if tracker is None:
                return trainer(cfg, name, storage_path, started_at=started_at).fit()
            forward = forward_reports()
            with _logging_reports(forward, tracker):
                result = trainer(cfg, name, storage_path, callbacks=[forward], started_at=started_at).fit()
            return result
    finally:
        if tracker is not None:
            tracker.finish(best_checkpoint(result) if result is not None else None, failed=result is None)


def forward_reports(select: Callable[[dict, str | None], dict | None] | None = None):
    """A Ray Train callback (it runs in the Train controller) that queues rank 0's reports, each with its
    checkpoint's URI, for the process that drains it (`drain`). `select(metrics, uri)` says what to queue
    (None: nothing); without it, every report."""
    from ray.train.v2.api.callback import UserCallback
    from ray.util.queue import Queue

    class ForwardReports(UserCallback):
        def __init__(self):
            self.queue = Queue(actor_options={"num_cpus": 0})

        def after_report(self, run_context, metrics, checkpoint):
            uri = checkpoint_uri(checkpoint) if checkpoint is not None else None
            report = dict(metrics[0]) if select is None else select(dict(metrics[0]), uri)
            if report is not None:
                self.queue.put((report, uri))

    return ForwardReports()


def drain(forward: Any, running: Callable[[], bool], handle: Callable[[dict, str | None], None]) -> None:
    """Hands each report `forward` queued to `handle` while `running()`, then the rest."""
    while running() or not forward.queue.empty():
        try:
            metrics, uri = forward.queue.get(timeout=0.5)
        except queue.Empty:
            continue
        handle(metrics, uri)


@contextlib.contextmanager
def _logging_reports(forward, tracker):
    """While the run trains, a thread hands each forwarded report to the tracker; on leaving, the rest.
    Only the driver's environment holds the trackers' credentials."""
    done = threading.Event()
    logger = threading.Thread(
        target=drain, args=(forward, lambda: not done.is_set(), tracker.log), name="raygan-tracking", daemon=True
    )
    logger.start()
    try:
        yield
    finally:
        done.set()
        logger.join()


def checkpoint_uri(checkpoint) -> str:
    return storage.uri_of(checkpoint.filesystem, checkpoint.path)


def best_checkpoint(result) -> str | None:
    """A finished run's best checkpoint by FID as Ray ranked them (the latest while none is scored)."""
    scored = [
        (m["fid"], checkpoint_uri(c))
        for c, m in (result.best_checkpoints or [])
        if m.get("fid", UNSCORED_FID) < UNSCORED_FID
    ]
    if scored:
        return min(scored)[1]
    return checkpoint_uri(result.checkpoint) if result.checkpoint else None


def bench(cfg: Config, steps: int, storage_path: str, name: str, started_at: float | None = None) -> dict:
    """Times `steps` real training steps (after a short warm-up) on the configured workers."""
    storage.check_name(name)
    with ray_connection([(cfg.scaling, {})]):
        return trainer(cfg, name, storage_path, bench_steps=steps, started_at=started_at).fit().return_value
