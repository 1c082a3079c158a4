"""Pictures of a run or a sweep: curves, image grids, a progress GIF and one HTML page that shows them.

    raygan report ~/raygan_results/exp1 --out report_exp1        # a run: losses, FID/KID, modes, grids, GIF
    raygan report s3://bucket/sweeps/sweep1 --out report_sweep1   # a sweep: the trials side by side

    from raygan.report import write_report
    write_report("~/raygan_results/exp1", "report_exp1")          # {"out", "kind", "files"}

Runs and experiments are read through `raygan.storage` (local folders and s3:// alike); the report is
written to a local folder. Everything is read and checked before anything is written, so bad input
(a folder that is neither a run nor an experiment) raises UserError and leaves no files behind.

The package's rooms: `loading` (run logs and experiments read back), `plots` (figures and the GIF) and
`page` (the HTML and `write_report`). This file only re-exports their public names.
"""

from raygan.report.loading import (
    Experiment,
    RunHistory,
    best_evaluation,
    detect,
    display_name,
    health_events,
    load_experiment,
    load_run,
    trial_runs,
)
from raygan.report.page import write_experiment_report, write_report, write_run_report, write_trials_csv
from raygan.report.plots import (
    has_modes,
    loss_keys,
    plot_effect,
    plot_fid,
    plot_fid_trials,
    plot_losses,
    plot_modes,
    plot_search_progress,
    write_progress_gif,
)
from raygan.tune.summary import importance, search_progress, searched_keys

__all__ = [
    "Experiment",
    "RunHistory",
    "best_evaluation",
    "detect",
    "display_name",
    "has_modes",
    "health_events",
    "importance",
    "load_experiment",
    "load_run",
    "loss_keys",
    "plot_effect",
    "plot_fid",
    "plot_fid_trials",
    "plot_losses",
    "plot_modes",
    "plot_search_progress",
    "search_progress",
    "searched_keys",
    "trial_runs",
    "write_experiment_report",
    "write_progress_gif",
    "write_report",
    "write_run_report",
    "write_trials_csv",
]
