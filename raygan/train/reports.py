"""The report bridge: what Ray gets of a `TrainReport`, and how reports travel back out of Ray Train to the
driver's trackers and to Tune, with the URI of the checkpoint each came with.

    ray.train.report(ray_metrics(report, with_checkpoint), checkpoint=...)   # in a worker
    forward = forward_reports()                                               # a Train callback
    drain(forward, runner.is_alive, handle)                                   # handle(report, uri), here

Ray ranks checkpoints by "fid", so a checkpoint taken between evaluations gets `UNSCORED_FID` there. That
placeholder is Ray's alone: it is added in `ray_metrics` and taken off again here, before a report or a
Result's metrics reach anything else (metrics.jsonl and meta.json never had it: fid null).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

from raygan import ray_private, storage
from raygan.train.train_report import TrainReport

UNSCORED_FID = 1e9  # Ray's score for a checkpoint taken between evaluations: last (Ray keeps scores in JSON, no inf)
CHECKPOINT_RANKING = {"checkpoint_score_attribute": "fid", "checkpoint_score_order": "min"}  # CheckpointConfig's

Select = Callable[[TrainReport, str | None], TrainReport | None]  # (report, checkpoint URI) -> what to queue


def ray_metrics(report: TrainReport, with_checkpoint: bool) -> dict[str, Any]:
    """What Ray gets: it ranks checkpoints by "fid", so one without an evaluation gets UNSCORED_FID there
    (and only there: its meta.json says fid null, and metrics.jsonl has no FID for that step)."""
    if with_checkpoint and "fid" not in report:
        return {**report, "fid": UNSCORED_FID}
    return dict(report)


def as_reported(metrics: dict[str, Any]) -> TrainReport:
    """`ray_metrics`' inverse: the report as the loop made it, from the metrics Ray got."""
    if not metrics.get("evaluated"):  # no evaluation: a "fid" here is the placeholder
        metrics = {key: value for key, value in metrics.items() if key != "fid"}
    return cast(TrainReport, metrics)


def quiet_report_log() -> None:
    """Ray logs every report, metrics and all, at INFO under a logger named by its file path."""
    logging.getLogger(ray_private.report_log_name()).setLevel(logging.WARNING)


def checkpoint_uri(checkpoint) -> str:
    """A ray.train.Checkpoint's URI (s3://... or a local path)."""
    return storage.uri_of(checkpoint.filesystem, checkpoint.path)


def result_report(result) -> TrainReport | None:
    """A finished run's last report (a ray.train.Result's metrics) as the loop made it; None if it made none."""
    return as_reported(result.metrics) if result.metrics else None


def result_best_checkpoint(result) -> str | None:
    """A finished run's best checkpoint by FID, as Ray ranked a ray.train.Result's checkpoints (the latest
    while none is scored)."""
    scored = [
        (m["fid"], checkpoint_uri(c))
        for c, m in (result.best_checkpoints or [])
        if m.get("fid", UNSCORED_FID) < UNSCORED_FID
    ]
    if scored:
        return min(scored)[1]
    return checkpoint_uri(result.checkpoint) if result.checkpoint else None


def forward_reports(select: Select | None = None):
    """A Ray Train callback (it runs in the Train controller) that queues rank 0's reports, each with its
    checkpoint's URI, for the process that drains it (`drain`). `select(report, uri)` says what to queue
    (None: nothing); without it, every report."""
    import ray
    from ray.train.v2.api.callback import UserCallback
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    class ForwardReports(UserCallback):
        def __init__(self):
            # on the reader's node, as Ray puts the Train controller on its driver's: the queue shares their
            # fate, never a worker node's (a node lost would take the reports with it)
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})

        def after_report(self, run_context, metrics, checkpoint):
            uri = checkpoint_uri(checkpoint) if checkpoint is not None else None
            report = as_reported(dict(metrics[0]))
            if select is not None:
                report = select(report, uri)
            if report is not None:
                self.queue.put((report, uri))

    return ForwardReports()


def drain(forward: Any, running: Callable[[], bool], handle: Callable[[TrainReport, str | None], None]) -> None:
    """Hands each report `forward` queued to `handle` while `running()`, then the rest."""
    while running() or not forward.queue.empty():
        try:
            report, uri = forward.queue.get(timeout=0.5)
        except queue.Empty:
            continue
        handle(report, uri)


@contextlib.contextmanager
def logging_reports(forward: Any, log: Callable[[TrainReport, str | None], None]) -> Iterator[None]:
    """While the run trains, a thread hands each forwarded report to `log` (a tracker's); on leaving, the
    rest. Only the driver's environment holds the trackers' credentials."""
    done = threading.Event()
    logger = threading.Thread(
        target=drain, args=(forward, lambda: not done.is_set(), log), name="raygan-tracking", daemon=True
    )
    logger.start()
    try:
        yield
    finally:
        done.set()
        logger.join()
