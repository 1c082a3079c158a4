"""The report bridge (raygan/train/reports.py): Ray's placeholder score ranks an unscored checkpoint last,
and never makes it a run's best."""

import json
from types import SimpleNamespace

import pyarrow.fs

from raygan.train.reports import UNSCORED_FID, ray_metrics, result_best_checkpoint


def test_ray_ranks_an_unscored_checkpoint_last():
    """Ray keeps checkpoints by "fid" (min); a checkpoint report without one would rank first (-inf)."""
    assert ray_metrics({"step": 5}, with_checkpoint=True) == {"step": 5, "fid": UNSCORED_FID}
    assert ray_metrics({"step": 10, "fid": 30.0}, with_checkpoint=True) == {"step": 10, "fid": 30.0}
    assert ray_metrics({"step": 5}, with_checkpoint=False) == {"step": 5}
    assert json.loads(json.dumps(UNSCORED_FID)) == UNSCORED_FID  # Ray stores scores as JSON: no inf


def checkpoint(path: str):
    return SimpleNamespace(filesystem=pyarrow.fs.LocalFileSystem(), path=path)


def result(metrics, scored: dict[str, float | None]):
    """A ray.train.Result's parts that raygan reads: its last metrics, its kept checkpoints with their metrics."""
    kept = [
        (checkpoint(path), ray_metrics({"step": 0, "fid": fid} if fid else {"step": 0}, True))
        for path, fid in scored.items()
    ]
    return SimpleNamespace(metrics=metrics, best_checkpoints=kept, checkpoint=kept[-1][0] if kept else None)


def test_a_results_best_checkpoint_is_never_an_unscored_one():
    assert result_best_checkpoint(result(None, {"/r/c5": None, "/r/c10": 30.0, "/r/c15": None})) == "/r/c10"
    assert result_best_checkpoint(result(None, {"/r/c5": None, "/r/c10": None})) == "/r/c10"  # none scored: the latest
    assert result_best_checkpoint(result(None, {})) is None
