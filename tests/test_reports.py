"""The report bridge (raygan/train/reports.py): Ray's placeholder score is added for Ray and taken off
before a report or a Result reaches anything else."""

import json
from types import SimpleNamespace

import pyarrow.fs

from raygan.train.reports import (
    UNSCORED_FID,
    as_reported,
    ray_metrics,
    result_best_checkpoint,
    result_report,
)

PLAIN = {"step": 5, "evaluated": False, "d_loss": 0.7}
EVALUATION = {"step": 10, "evaluated": True, "fid": 30.0, "new_best": 1}


def test_ray_ranks_an_unscored_checkpoint_last():
    """Ray keeps checkpoints by "fid" (min); a checkpoint report without one would rank first (-inf)."""
    assert ray_metrics({"step": 5}, with_checkpoint=True) == {"step": 5, "fid": UNSCORED_FID}
    assert ray_metrics({"step": 10, "fid": 30.0}, with_checkpoint=True) == {"step": 10, "fid": 30.0}
    assert ray_metrics({"step": 5}, with_checkpoint=False) == {"step": 5}
    assert json.loads(json.dumps(UNSCORED_FID)) == UNSCORED_FID  # Ray stores scores as JSON: no inf


def test_what_ray_got_comes_back_as_the_loop_reported_it():
    for report in (PLAIN, EVALUATION):
        for with_checkpoint in (True, False):
            assert as_reported(ray_metrics(report, with_checkpoint)) == report
    assert "fid" not in as_reported({**PLAIN, "fid": UNSCORED_FID})


def checkpoint(path: str):
    return SimpleNamespace(filesystem=pyarrow.fs.LocalFileSystem(), path=path)


def result(metrics, scored: dict[str, float | None]):
    """A ray.train.Result's parts that raygan reads: its last metrics, its kept checkpoints with their metrics."""
    kept = [
        (checkpoint(path), ray_metrics({"step": 0, "fid": fid} if fid else {"step": 0}, True))
        for path, fid in scored.items()
    ]
    return SimpleNamespace(metrics=metrics, best_checkpoints=kept, checkpoint=kept[-1][0] if kept else None)


def test_a_results_last_report_and_best_checkpoint_never_show_the_placeholder():
    assert result_report(result(ray_metrics(PLAIN, True), {})) == PLAIN
    assert result_report(result(None, {})) is None
    assert result_best_checkpoint(result(None, {"/r/c5": None, "/r/c10": 30.0, "/r/c15": None})) == "/r/c10"
    assert result_best_checkpoint(result(None, {"/r/c5": None, "/r/c10": None})) == "/r/c10"  # none scored: the latest
    assert result_best_checkpoint(result(None, {})) is None
