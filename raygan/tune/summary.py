"""A sweep's results: the trial row (`TrialRow`) and its column order, the run-folder naming of PBT
continuations, summary.json / summary.csv / search.json written and read back, and what they say about the
search (each searched value's importance, the best FID so far). The report and the CLI read them from here.

    rows = trial_rows(tuner.fit(), searched, cfg.train.steps, cfg.tune.search_space)   # best FID first
    write_summary(experiment_uri, rows, searched)
    rows = read_summary(experiment_uri)                                                 # None when absent
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from pathlib import Path
from typing import Any, NamedTuple

from raygan import storage
from raygan.errors import UserError
from raygan.tune.space import as_searched, to_tune_domain

SUMMARY, SEARCH, RUNS = "summary.json", "search.json", "runs"  # what a sweep leaves in its experiment folder


@dataclasses.dataclass
class TrialRow:
    """One trial of a sweep, as summary.json lists it: its searched values, then what it reached."""

    trial: str
    order: int | None = None  # when the sweep started it, 0 first
    searched: dict[str, Any] = dataclasses.field(default_factory=dict)  # config key -> the trial's value
    best_fid: float | None = None
    best_step: int | None = None
    last_step: int | None = None
    health: str | None = None
    stop_reason: str | None = None  # "completed", "stopped by the scheduler", "error: ...", a health condition
    trained_s: float | None = None  # cost: seconds trained, over restarts and PBT's donors
    images_seen: int | None = None
    best_checkpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The row as summary.json holds it: trial, order, the searched keys, then the results."""
        values = dataclasses.asdict(self)
        return {"trial": self.trial, "order": self.order, **self.searched, **{k: values[k] for k in RESULT_COLUMNS}}


SUMMARY_COLUMNS = tuple(f.name for f in dataclasses.fields(TrialRow) if f.name != "searched")  # the fixed columns
RESULT_COLUMNS = SUMMARY_COLUMNS[SUMMARY_COLUMNS.index("best_fid") :]  # the columns after the searched keys
CONSOLE_COLUMNS = ("best_fid", "best_step", "last_step", "trained_s", "stop_reason")  # what `raygan tune` prints


# ---------------------------------------------------------------------------------------------
# run folders: a trial's own run is runs/T; a PBT exploit continues the donor's under runs/T-from-DONOR-STEP


class RunFolder(NamedTuple):
    trial: str
    donor: str | None = None  # the trial whose checkpoint this run continued (PBT), None for the trial's own
    step: int | None = None  # the donor's step it continued from


def run_folder_name(trial: str, donor: str, step: int) -> str:
    """The run a PBT exploit continues in: trial `trial` from `donor`'s checkpoint at `step`."""
    return f"{trial}-from-{donor}-{step}"


def parse_run_folder(name: str) -> RunFolder:
    """`T` or `T-from-DONOR-STEP` back into its parts (`run_folder_name`'s inverse)."""
    trial, _, continuation = name.partition("-from-")
    if not continuation:
        return RunFolder(trial)
    step = re.search(r"-(\d+)$", continuation)
    if not step:
        return RunFolder(trial, continuation)
    return RunFolder(trial, continuation[: step.start()], int(step.group(1)))


# ---------------------------------------------------------------------------------------------
# the rows, from Tune's results


def _trial_id(result) -> str:
    """The trial's own id, from its folder (trial_<id>_...), to find its row in Tune's table: a trial that
    PBT restored at its last perturbation point reports nothing itself, and its Result's metrics are the
    donor's, trial_id included."""
    found = re.search(r"_([0-9a-f]{5}_\d{5})_", Path(result.path).name) if result.path else None
    return found.group(1) if found else (result.metrics or {}).get("trial_id", "?")


def error_line(error: BaseException) -> str:
    """The line that says what went wrong: the last line of the innermost error's message (Ray wraps a
    trial's exception in RayTaskError and TrainingFailedError, whose first lines name only processes)."""
    while getattr(error, "cause", None) is not None or error.__cause__ is not None:
        error = getattr(error, "cause", None) or error.__cause__
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    return text if text.startswith(type(error).__name__) else f"{type(error).__name__}: {text}"[:200]


def _cell(record: dict, column: str) -> Any:
    """A value of Tune's table, with its gaps (NaN where a trial lacks the column) back to None."""
    value = record.get(column)
    return None if isinstance(value, float) and math.isnan(value) else value


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, float) else value  # a column with a gap holds its integers as floats


def trial_rows(result_grid, searched: list[str], steps: int, space: dict | None = None) -> list[dict[str, Any]]:
    """The sweep's summary, best FID first: Tune's own table of each trial's last result (`get_dataframe()`,
    with no filter_metric: the best evaluation's row would not say where the trial stopped, and best_fid is
    already the trial's running best) beside the grid's Results."""
    return summary_rows(result_grid.get_dataframe(), list(result_grid), searched, steps, space or {})


def summary_rows(table, results: list, searched: list[str], steps: int, space: dict) -> list[dict[str, Any]]:
    """One row per Result. `table` as ResultGrid.get_dataframe() builds it: a row per trial that reported
    (its last `TrainReport`, raygan.train.train_report), nested keys flattened with "/" (health/status), the
    trial's config as config/<key>."""
    from ray.tune.utils import flatten_dict  # lazy: importing raygan.tune (the CLI) does not start Ray's import

    last = {record["trial_id"]: record for record in table.to_dict("records")}
    rows = []
    # The Results give what the table lacks: Tune's order, each trial's error, the trials that never reported
    for order, result in enumerate(results):
        trial_id = _trial_id(result)
        record = last.get(trial_id) or {f"config/{key}": value for key, value in (result.config or {}).items()}
        metrics = result.metrics or {}
        if (metrics.get("step") or -1) > (_count(_cell(record, "step")) or -1):  # PBT restored it at a later point
            record = {**record, **flatten_dict(metrics, delimiter="/")}  # the donor's state there is now its own
        step = _count(_cell(record, "step"))
        if result.error is not None:
            reason = f"error: {error_line(result.error)}"
        elif _cell(record, "health/stop_reason"):
            reason = _cell(record, "health/stop_reason")
        elif step is not None and step < steps:
            reason = "stopped by the scheduler"
        else:
            reason = "completed"
        row = TrialRow(
            trial=trial_id,
            order=order,
            searched={key: as_searched(space.get(key), _cell(record, f"config/{key}")) for key in searched},
            best_fid=_cell(record, "best_fid"),
            best_step=_count(_cell(record, "best_step")),
            last_step=step,
            health=_cell(record, "health/status"),
            stop_reason=reason,
            trained_s=_cell(record, "trained_s"),
            images_seen=_count(_cell(record, "images_seen")),
            best_checkpoint=_cell(record, "best_checkpoint"),
        )
        rows.append(row.to_dict())
    return sorted(rows, key=lambda r: r["best_fid"] if r["best_fid"] is not None else math.inf)


# ---------------------------------------------------------------------------------------------
# what the rows say about the search


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)


def searched_keys(rows: list[dict]) -> list[str]:
    """The swept config keys: every summary column that is not one of the fixed ones, in order."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in SUMMARY_COLUMNS and k not in keys]
    return keys


def search_progress(rows: list[dict]) -> list[dict]:
    """After each trial, in the order the sweep started them: the best FID so far and the seconds trained
    by all trials up to it (what a searcher is judged on: how soon it finds a good config, at what cost)."""
    ordered = sorted(rows, key=lambda r: r["order"] if is_number(r.get("order")) else math.inf)  # stable
    best, spent, progress = math.inf, 0.0, []
    for count, row in enumerate(ordered, 1):
        spent += row.get("trained_s") or 0.0
        if finite(row.get("best_fid")):
            best = min(best, row["best_fid"])
        progress.append(
            {
                "trials": count,
                "trial": row["trial"],
                "trained_s": spent,
                "best_fid": best if math.isfinite(best) else None,
            }
        )
    return progress


def importance(rows: list[dict], searched: list[str]) -> dict[str, float | None]:
    """Spearman rank correlation of each numeric searched value with the trials' best FID (-1: larger values
    always did better, 0: no monotone effect); None for categories or under 3 scored trials with varied values."""
    from scipy.stats import spearmanr  # lazy: scipy is slow to import and only a finished sweep needs it

    scored = [row for row in rows if finite(row.get("best_fid"))]
    result: dict[str, float | None] = {}
    for key in searched:
        values, fids = [row.get(key) for row in scored], [row["best_fid"] for row in scored]
        if len(scored) < 3 or not all(is_number(v) for v in values) or len(set(values)) < 2 or len(set(fids)) < 2:
            result[key] = None
            continue
        rho = float(spearmanr(values, fids).statistic)
        result[key] = round(rho, 3) if math.isfinite(rho) else None
    return result


def fanova_importance(rows: list[dict], space: dict, seed: int) -> dict[str, float] | None:
    """optuna's fANOVA importance of each searched key for best FID (shares of the explained variance,
    summing to 1), fitted on the scored trials; None with fewer than 3 of them."""
    import optuna  # lazy: optuna is an optional package, needed by optuna sweeps only
    from ray.tune.search.optuna import OptunaSearch

    scored = [row for row in rows if row.get("best_fid") is not None and math.isfinite(row["best_fid"])]
    if len(scored) < 3 or not space:
        return None
    distributions = OptunaSearch.convert_search_space({key: to_tune_domain(spec) for key, spec in space.items()})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    for row in scored:
        params = {key: row[key] for key in space}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=row["best_fid"]))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)  # a random forest: seeded to be repeatable
    return {
        key: round(float(v), 3)
        for key, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()
    }


def search_summary(rows: list[dict], searched: list[str], fanova: dict | None = None) -> dict[str, Any]:
    """search.json: each searched value's rank correlation with best FID, the best FID so far, and optuna's
    fANOVA importance where the sweep computed it."""
    search: dict[str, Any] = {"importance": importance(rows, searched), "best_so_far": search_progress(rows)}
    if fanova is not None:
        search["fanova"] = fanova
    return search


# ---------------------------------------------------------------------------------------------
# the files


def write_summary(experiment_uri: str, rows: list[dict], searched: list[str], fanova: dict | None = None) -> None:
    """summary.json and summary.csv (the rows), search.json (`search_summary`) in the experiment folder."""
    storage.write_bytes(storage.join(experiment_uri, SUMMARY), json.dumps(rows, indent=2, default=str).encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["trial"])
    writer.writeheader()
    writer.writerows(rows)
    storage.write_bytes(storage.join(experiment_uri, "summary.csv"), text.getvalue().encode())
    search = search_summary(rows, searched, fanova)  # summary.json stays a list of rows
    storage.write_bytes(storage.join(experiment_uri, SEARCH), json.dumps(search, indent=2).encode())


def read_summary(experiment_uri: str) -> list[dict] | None:
    """summary.json's rows, None when the sweep has not written it; UserError when it is not a list of rows."""
    uri = storage.join(experiment_uri, SUMMARY)
    data = storage.read_bytes(uri)
    if data is None:
        return None
    try:
        rows = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{uri}: not valid JSON ({e})") from None
    if not isinstance(rows, list) or any(not isinstance(r, dict) or "trial" not in r for r in rows):
        raise UserError(f"{uri}: expected a list of rows, each with a 'trial'")
    return rows


def read_fanova(experiment_uri: str) -> dict[str, float] | None:
    """search.json's fANOVA importance (optuna sweeps), None when absent or unreadable: the report does without."""
    search = storage.read_bytes(storage.join(experiment_uri, SEARCH))
    try:
        return json.loads(search).get("fanova") if search else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
