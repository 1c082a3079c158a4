"""`python -m raygan.tune CONFIG` (same as `raygan tune CONFIG`): a Ray Tune sweep ranked by FID.

    python -m raygan.tune tune_configs/smoke.yaml --json
    ray job submit --working-dir . -- python -m raygan.tune tune_configs/default.yaml --storage s3://bucket/sweeps

Each trial is a full data-parallel Ray Train run: a Tune function trainable builds a `TorchTrainer`
whose callback forwards every evaluation (FID and the health monitor's flags) to Tune, with a small
Tune checkpoint that points at the Train checkpoint in storage. Schedulers: `asha` stops weak trials
at evaluation milestones; `pbt` restarts weak trials from a strong trial's checkpoint with perturbed
hyperparameters, which the restored run applies over the checkpoint's; `fifo` runs all to the end.

The package's rooms: `space` (the search space), `searchers` (schedulers and search algorithms), `trials`
(the trial function and its pointer checkpoints), `summary` (the trial row, summary files, importance) and
`sweep` (the driver). This file only re-exports their public names.
"""

from raygan.tune.searchers import SEARCHER_PACKAGES, make_scheduler, make_search_alg, tpe_startup_trials
from raygan.tune.space import (
    DISTRIBUTIONS,
    KeepInRange,
    as_searched,
    check_searchable,
    check_spec,
    in_range,
    on_steps,
    pbt_mutation,
    to_tune_domain,
    trial_requests,
    validate_search_space,
)
from raygan.tune.summary import (
    SUMMARY_COLUMNS,
    TrialRow,
    error_line,
    fanova_importance,
    read_summary,
    summary_rows,
    trial_rows,
    write_summary,
)
from raygan.tune.sweep import restore_args, run_sweep, validate_sweep
from raygan.tune.trials import (
    POINTER,
    TRIAL_RESOURCES,
    EvaluationsForTune,
    complete_checkpoint,
    trainable,
    trial,
    trial_config,
)

__all__ = [
    "DISTRIBUTIONS",
    "POINTER",
    "SEARCHER_PACKAGES",
    "SUMMARY_COLUMNS",
    "TRIAL_RESOURCES",
    "EvaluationsForTune",
    "KeepInRange",
    "TrialRow",
    "as_searched",
    "check_searchable",
    "check_spec",
    "complete_checkpoint",
    "error_line",
    "fanova_importance",
    "in_range",
    "make_scheduler",
    "make_search_alg",
    "on_steps",
    "pbt_mutation",
    "read_summary",
    "restore_args",
    "run_sweep",
    "summary_rows",
    "tpe_startup_trials",
    "trainable",
    "trial",
    "trial_config",
    "trial_requests",
    "trial_rows",
    "to_tune_domain",
    "validate_search_space",
    "validate_sweep",
    "write_summary",
]
