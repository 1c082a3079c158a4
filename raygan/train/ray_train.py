"""The thin Ray Train adapter: runs `train_loop` on `TorchTrainer` workers with DDP.

    result = fit(cfg, name="smoke", storage_path="/tmp/runs")   # ray.train.Result

Rank 0 writes checkpoints; every rank reports at the same steps (Ray's report is a barrier).
Running again with the same name and storage resumes from the newest complete checkpoint. A full disk
stops the run: every rank leaves the loop at the same report, and rank 0's line says why (an error would
be retried by Ray, train.max_failures times, each losing the steps since the last checkpoint). Beside it:
`raygan.train.session` (the Ray a command runs on), `raygan.train.reports` (what a report becomes on its
way through Ray and back) and `raygan.train.bench` (the same workers, timed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointUploadMode
from ray.train.v2.api.config import LoggingConfig

from raygan import ray_private, storage
from raygan.checkpoint import (
    STATE,
    checkpoint_name,
    list_checkpoints,
    read_meta,
    safe_load,
    upload_order,
    write_checkpoint,
)
from raygan.collectives import all_reduce_sum
from raygan.config import Config, build_config
from raygan.data import indexed_batches, load_dataset
from raygan.data.stream import StreamedBatches, folder_dataset, in_memory
from raygan.errors import RunFailure, first_line
from raygan.images import grid_array, png_bytes
from raygan.metrics.evaluator import Evaluator
from raygan.metrics.health import HealthMonitor
from raygan.storage import StorageFull
from raygan.train import reports, session
from raygan.train.loop import train_loop
from raygan.train.runlog import RunLog, grid_latents
from raygan.train.step import Batch, GANEngine
from raygan.train.train_report import TrainReport

STORAGE_PATIENCE_S = 900  # a checkpoint waits this long for unreachable storage before the run fails
STORAGE_RETRY_S = 5
ERROR = "error"  # the key of a stopped run's Result.return_value: the line that says why


# BatchNorm buffers stay per rank during steps (no broadcast before every forward: four fewer
# collectives per step); GANEngine.average_buffers makes them equal before evaluations and checkpoints.
DDP_OPTIONS: dict[str, Any] = {"broadcast_buffers": False}


def _prepare(module: torch.nn.Module) -> torch.nn.Module:
    return ray.train.torch.prepare_model(module, move_to_device=False, parallel_strategy_kwargs=DDP_OPTIONS)


@dataclasses.dataclass
class Worker:
    """What every Train worker builds first, for a run or a bench."""

    cfg: Config
    engine: GANEngine
    batches: Callable[[int], Batch]  # k -> this rank's part of global real batch k
    channels: int
    num_classes: int
    rank: int
    world_size: int


def start_worker(loop_config: dict[str, Any]) -> Worker:
    """The config, this rank's data and the engine, from the loop_config that `trainer` wrote."""
    reports.quiet_report_log()
    cfg = build_config(loop_config["config"])
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
            write_line(f"skipped {dataset.skipped} undecodable files in {cfg.data.path}")
    engine = GANEngine(cfg, channels, num_classes, device, _prepare, rank, world_size)
    if rank == 0 and cfg.train.amp and engine.amp_dtype is None:
        write_line(f"train.amp {cfg.train.amp}: this CPU has no {cfg.train.amp} instructions; training in float32")
    return Worker(cfg, engine, batches, channels, num_classes, rank, world_size)


def train_worker(loop_config: dict[str, Any]) -> dict | None:
    """`train_loop_per_worker` of a run: loop_config holds the resolved config, where the run writes and
    what it resumes from; returns where the time went (`timing`), or on rank 0 of a run that a full disk
    stopped {ERROR: the line that says so}."""
    worker = start_worker(loop_config)
    cfg, engine, batches, rank = worker.cfg, worker.engine, worker.batches, worker.rank
    bounded_d_loss = math.isfinite(engine.adversaries[0].spec.loss.d_min)  # D's loss has a floor (not a critic's)
    monitor = HealthMonitor(cfg.health, cfg.train.stop_on, cfg.train.patience, bounded_d_loss)
    checkpoint = ray.train.get_checkpoint()  # this run's latest that Ray registered (after a failure or a re-run)
    unregistered = newer_checkpoint(checkpoint, loop_config["run_uri"])  # one whose report was cut short
    if unregistered is not None:
        checkpoint = stored_checkpoint(unregistered)
    if checkpoint is None and loop_config.get("resume_from"):  # another run's (a PBT exploit)
        checkpoint = ray.train.Checkpoint(loop_config["resume_from"])
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = safe_load(Path(folder) / STATE)
        engine.load_state_dict(state)
        if "health" in state:
            monitor.load_state_dict(state["health"])
        if rank == 0:
            write_line(f"resumed from step {engine.step}")
    if unregistered is not None:  # its report now: Ray keeps the checkpoint, a sweep gets its evaluation
        report_again(checkpoint, rank)
    evaluate = Evaluator(
        cfg, worker.channels, worker.num_classes, rank, worker.world_size, loop_config["storage_root"], engine.device
    )
    if rank == 0:
        write_line("real statistics " + ("computed and cached" if evaluate.real_computed else "read from the cache"))
    run_log = RunLog(loop_config["run_uri"], engine.step) if rank == 0 else None
    grid_z, grid_labels, grid_columns = grid_latents(cfg, worker.num_classes)

    kept = checkpoint.path if checkpoint is not None else None  # the newest complete checkpoint: what a rerun resumes

    def report(metrics: TrainReport, with_checkpoint: bool) -> None:
        nonlocal kept
        full = None  # rank 0's StorageFull: the run files or the checkpoint could not be written
        checkpoint = None
        if rank == 0:
            grid = None
            if metrics["evaluated"]:  # the fixed-latent grid goes with each evaluation
                grid = grid_array(engine.generate(grid_z, grid_labels), grid_columns)
            try:
                run_log.record(metrics, grid)
                if with_checkpoint:
                    checkpoint = save_checkpoint(engine, cfg, metrics, {"health": monitor.state_dict()}, grid)
                    kept = checkpoint.path
            except StorageFull as e:
                full = e
        # every rank reports, and as often: Ray's report is a barrier (rank 0's checkpoint is uploaded by now)
        ray.train.report(
            reports.ray_metrics(metrics, with_checkpoint),
            checkpoint=checkpoint,
            checkpoint_dir_name=checkpoint_name(engine.step) if with_checkpoint else None,
            checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD,
        )
        if any_rank(full is not None):  # the ranks stop together, at the same report
            raise RunStopped(storage_full_line(full, engine.step, kept) if full is not None else None)

    progress = write_line if rank == 0 else None
    try:
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
    except RunStopped as stopped:  # a full disk: no retry (Ray would retry an error), rank 0 says why
        return {ERROR: stopped.line} if rank == 0 else None
    finally:
        if run_log is not None:
            run_log.close()
    if rank == 0 and getattr(batches, "skipped", 0):
        write_line(f"skipped {batches.skipped} undecodable files in {cfg.data.path}")
    return timing(summary, loop_config["started_at"])


def newer_checkpoint(latest: ray.train.Checkpoint | None, run_uri: str) -> str | None:
    """The name of this run's newest complete checkpoint where it is newer than Ray's latest: rank 0 uploads
    a checkpoint before it reports it, so a node lost or a run killed in between leaves one that Ray never
    registered. Every rank finds the same: nothing is written before all of them have loaded it."""
    complete = list_checkpoints(run_uri)
    if complete and (latest is None or storage.basename(complete[-1]) > storage.basename(latest.path)):
        return storage.basename(complete[-1])
    return None


def stored_checkpoint(name: str) -> ray.train.Checkpoint:
    """This run's checkpoint `name` as Ray names its own (its storage filesystem: one Ray will manage)."""
    fs, path = ray_private.checkpoint_destination(name)
    return ray.train.Checkpoint(path, fs)


def report_again(checkpoint: ray.train.Checkpoint, rank: int) -> None:
    """The report that a checkpoint's upload was made for, with the metrics it keeps in meta.json; every
    rank reports, rank 0 with the checkpoint (Ray's report is a barrier)."""
    meta = read_meta(storage.uri_of(checkpoint.filesystem, checkpoint.path))
    metrics = {key: value for key, value in meta.items() if key not in ("channels", "num_classes")}
    if metrics.get("fid") is None:  # taken between evaluations: unscored
        metrics.pop("fid", None)
    ray.train.report(
        reports.ray_metrics(cast(TrainReport, metrics), with_checkpoint=True),
        checkpoint=checkpoint if rank == 0 else None,
        checkpoint_dir_name=storage.basename(checkpoint.path),
        checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD,
    )


class RunStopped(Exception):
    """Raised out of the loop on every rank at once; `line` (rank 0's) says why."""

    def __init__(self, line: str | None):
        super().__init__(line)
        self.line = line


def any_rank(flag: bool) -> bool:
    """Whether `flag` is set on any rank; every rank calls it (a collective, at each report)."""
    return all_reduce_sum(torch.tensor(float(flag))).item() > 0


def storage_full_line(full: StorageFull, step: int, kept: str | None) -> str:
    """The one line a run stopped by a full disk ends with: the path, what is left, and what to do."""
    then = (
        f"its last checkpoint {storage.basename(kept)} is intact: free space and run the same command to resume"
        if kept is not None
        else "it has no checkpoint yet: free space and run the same command to start it again"
    )
    return f"{full} (at step {step}); the run stopped, {then}"


def save_checkpoint(engine, cfg: Config, metrics: TrainReport, extra_state: dict, grid) -> ray.train.Checkpoint:
    """Rank 0's checkpoint, written to a temporary folder and uploaded to the run's storage."""
    with tempfile.TemporaryDirectory() as folder:
        grid_png = png_bytes(grid) if grid is not None else None
        with storage.full_disk_names(folder):  # the local disk
            write_checkpoint(Path(folder), engine, cfg, metrics, extra_state, grid_png)
        return upload_checkpoint(Path(folder), checkpoint_name(engine.step))


def timing(summary: dict, started_at: float) -> dict:
    """Where a run's time went (Result.return_value): launch to first step, and the loop's split."""
    first = summary["first_step_at"]
    return {
        "startup_s": None if first is None else first - started_at,
        "loop_s": summary["wall"],
        **{f"{part}_s": seconds for part, seconds in summary["seconds"].items()},
    }


def upload_checkpoint(folder: Path, dir_name: str) -> ray.train.Checkpoint:
    """A checkpoint folder into this run's storage as `dir_name`, ready to report (it is in place already)."""
    fs, dest = ray_private.checkpoint_destination(dir_name)
    upload_files(fs, dest, upload_order(folder))
    return ray.train.Checkpoint(dest, fs)


def upload_files(fs, dest: str, files: list[Path], patience_s: float = STORAGE_PATIENCE_S) -> None:
    """File by file, manifest last. While storage is unreachable (an S3 outage) wait and retry instead of
    failing the run: training pauses meanwhile, nothing is lost. A full disk is not waited for (see
    StorageFull): what was written is removed, never a checkpoint anyway without its manifest, and the
    run stops."""
    name = storage.basename(dest)
    deadline, waited = time.monotonic() + patience_s, False
    while True:
        try:
            for file in files:
                storage.write_file(fs, storage.join(dest, file.name), file.read_bytes())
            break
        except StorageFull:
            with contextlib.suppress(OSError):  # the space it took goes back to the run's other files
                fs.delete_dir(dest)
            raise
        except OSError as e:
            if time.monotonic() > deadline:
                raise
            if not waited:
                write_line(f"warning: storage unreachable, {name} waits for it ({first_line(e)[:160]})")
                waited = True
            time.sleep(STORAGE_RETRY_S)
    if waited:
        write_line(f"storage reachable again: {name} written")


def write_line(line: str) -> None:
    # sys.stdout, not print: Ray Train patches print() into its logger, which echoes each line twice
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def trainer(
    cfg: Config,
    name: str,
    storage_path: str,
    callbacks: list | None = None,  # Ray Train callbacks (the sweep's link to Tune)
    resume_from: str | None = None,  # a checkpoint of another run to start from
    cache_root: str | None = None,  # where real statistics are cached; default storage_path
    started_at: float | None = None,  # wall clock the user launched at; default now
    worker: Callable[[dict[str, Any]], dict] = train_worker,  # what each Train worker runs (bench: bench_worker)
    worker_options: dict[str, Any] | None = None,  # more of its loop_config (bench: bench_steps)
):
    """The TorchTrainer of a run named `name` under `storage_path` (not started: call its fit())."""
    storage.check_name(name)
    s = cfg.scaling
    datasets = {}
    loop_config = {
        "config": cfg.to_dict(),
        "resume_from": resume_from,
        "storage_root": cache_root or storage_path,
        "run_uri": storage.join(storage_path, name),
        "started_at": started_at or time.time(),
        **(worker_options or {}),
    }
    if cfg.data.name == "folder" and not in_memory(cfg.data):
        datasets["train"], info = folder_dataset(cfg.data)
        loop_config.update(stream=True, num_classes=max(1, len(info.class_names)))
    resources = session.worker_resources(s)
    return ray.train.torch.TorchTrainer(
        worker,
        train_loop_config=loop_config,
        datasets=datasets,
        scaling_config=ray.train.ScalingConfig(
            num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=name,
            **session.ray_storage(storage_path),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(  # the best by FID, and always the latest
                num_to_keep=cfg.train.keep_checkpoints, **reports.CHECKPOINT_RANKING
            ),
            logging_config=LoggingConfig(log_level="WARNING"),  # keep progress lines readable
            callbacks=callbacks,
        ),
    )


def fit(cfg: Config, name: str, storage_path: str, started_at: float | None = None):
    """One training run (resumed if `storage_path/name` holds checkpoints); returns Ray's Result, or raises
    RunFailure where the workers stopped the run themselves (a full disk).

    With `logging` set, the run is opened in the trackers before Ray starts and every report is
    logged from here, the driver (see raygan/tracking.py).
    """
    from raygan import tracking

    run_uri = storage.join(storage_path, storage.check_name(name))  # before the trackers open a run
    tracker = tracking.RunTracker(cfg, name, run_uri) if tracking.enabled(cfg.logging) else None
    result = None
    try:
        with session.ray_connection([(cfg.scaling, {})]):
            if tracker is None:
                result = trainer(cfg, name, storage_path, started_at=started_at).fit()
            else:
                forward = reports.forward_reports()
                with reports.logging_reports(forward, tracker.log):
                    result = trainer(cfg, name, storage_path, callbacks=[forward], started_at=started_at).fit()
    finally:
        if tracker is not None:
            best = reports.result_best_checkpoint(result) if result is not None else None
            tracker.finish(best, failed=result is None or stopped_by(result) is not None)
    raise_if_stopped(result)
    return result


def stopped_by(result) -> str | None:
    """Why the workers stopped a run before its end (a full disk), as rank 0 said it; None if they did not."""
    value = result.return_value
    return value.get(ERROR) if isinstance(value, dict) else None


def raise_if_stopped(result) -> None:
    if (line := stopped_by(result)) is not None:
        raise RunFailure(line)
