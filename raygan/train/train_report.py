"""`TrainReport`: what the training loop reports, the one contract its readers share.

    def report(metrics: TrainReport, with_checkpoint: bool) -> None: ...   # train_loop's hook
    if metrics["evaluated"]: fid = metrics["fid"]                            # the keys a reader may rely on

The loop makes a report at each report, evaluation or checkpoint step (`raygan.train.loop`); the Ray
adapter hands it to `ray.train.report`, rank 0 appends it to the run's metrics.jsonl (`raygan.train.runlog`),
the bridge forwards it to the trackers and to Tune (`raygan.train.reports`, `raygan.tune.trials`), and
the report and the sweep summary read it back. Ray's placeholder score for a checkpoint taken without an
evaluation is not a key of it: it lives in `raygan.train.reports` only.
"""

# no `from __future__ import annotations` here: Python 3.11's TypedDict cannot see Required in a string
from typing import Required, TypedDict

from raygan.metrics.health import HealthSummary


class TrainReport(TypedDict, total=False):
    """One report of a run. Besides the keys below it holds every loss and rate the engine tracked, by name
    (`d_loss`, `g_loss`, `d_accuracy`, `d_r1`, `g_grad_norm`, `lr_g`, `lr_d`, `augment_p` ...)."""

    # every report
    step: Required[int]
    images_per_s: Required[float]  # since the previous report
    evaluated: Required[bool]  # scored at this step: the evaluation's keys below are present
    trained_s: Required[float]  # seconds trained so far, over resumes (train.time_budget_s counts these)
    images_seen: Required[int]
    d_skipped: Required[int]  # steps skipped for a non-finite loss, so far
    g_skipped: Required[int]

    # an evaluation (raygan.metrics.evaluator), evaluated true
    fid: float
    kid: float
    kid_std: float
    mifid: float
    diversity: float  # feature diversity of a fixed latent batch, as a share of the real data's
    modes_covered: int  # labelled data only: classes the samples cover ...
    modes_total: int
    modes_expected: float  # ... and how many as many real draws cover
    mode_kl: float
    mode_kl_floor: float
    precision: float
    recall: float
    density: float
    coverage: float
    eval_s: float

    # the health monitor's verdict on an evaluation (raygan.metrics.health), with a monitor
    new_best: int  # 1 when fid is the run's best so far (a new best is always checkpointed)
    best_fid: float | None
    best_step: int | None
    health_nan: int  # 1 while the condition holds, one flag per config.HEALTH_CONDITIONS
    health_collapse: int
    health_diminished_gradient: int
    health_non_convergence: int
    health: HealthSummary

    # added on the way to the trackers and Tune (raygan.train.reports, raygan.tune.trials)
    best_checkpoint: str | None  # URI of the run's best checkpoint so far
    run: str  # Tune only: the URI of the run folder the trial trains in (its grids are there)
