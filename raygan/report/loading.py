"""Reading a run or a sweep for the report: a run's records and grids (`RunHistory`, a PBT trial's run
folders joined into one), an experiment's rows and histories (`Experiment`), through `raygan.storage` so
that s3:// reads like a folder. Bad input is a UserError that names the path."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from raygan import storage
from raygan.errors import UserError
from raygan.train.runlog import GRIDS, read_metrics
from raygan.train.train_report import TrainReport
from raygan.tune.summary import (
    RUNS,
    SUMMARY,
    TrialRow,
    finite,
    parse_run_folder,
    read_fanova,
    read_summary,
    searched_keys,
)


@dataclass
class RunHistory:
    """One run's records (sorted by step) and grids; for a PBT trial, the union of its run folders."""

    name: str
    sources: list[str]
    records: list[TrainReport]  # metrics.jsonl's lines
    grids: dict[int, str] = field(default_factory=dict)  # step -> URI of the grid PNG

    @property
    def evaluations(self) -> list[TrainReport]:
        return [r for r in self.records if "fid" in r]


def _list(uri: str) -> list[str]:
    try:
        return storage.list_dir(uri)
    except (OSError, ValueError):  # a file, or a URI pyarrow cannot open: neither is a run
        return []


def detect(uri: str) -> str:
    """ "run" or "experiment"; anything else is a UserError that names the path and what is missing."""
    names = _list(uri)
    if SUMMARY in names or RUNS in names:
        return "experiment"
    if "metrics.jsonl" in names:
        return "run"
    if not names:
        state = "is a file" if _is_file(uri) else "does not exist or is empty"
        raise UserError(f"{uri}: {state}; expected a run folder (metrics.jsonl) or an experiment ({SUMMARY}, {RUNS}/)")
    raise UserError(f"{uri}: not a run (no metrics.jsonl) nor an experiment (no {SUMMARY} or {RUNS}/)")


def _is_file(uri: str) -> bool:
    try:
        return storage.is_file(uri)
    except (OSError, ValueError):  # a URI pyarrow cannot open is no file either
        return False


def _read_records(run_uri: str) -> list[TrainReport]:
    try:
        records = read_metrics(run_uri)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{storage.join(run_uri, 'metrics.jsonl')}: a line is not valid JSON") from None
    if any(not isinstance(r, dict) or not finite(r.get("step")) for r in records):
        raise UserError(f"{storage.join(run_uri, 'metrics.jsonl')}: a line without a numeric step")
    by_step = {int(r["step"]): r for r in records}  # a repeated step: the later line wins
    return [by_step[step] for step in sorted(by_step)]


def _read_grids(run_uri: str) -> dict[int, str]:
    folder = storage.join(run_uri, GRIDS)
    grids = {}
    for name in _list(folder):
        match = re.fullmatch(r"step_(\d+)\.png", name)
        if match:
            grids[int(match.group(1))] = storage.join(folder, name)
    return grids


def load_run(run_uris: list[str], name: str) -> RunHistory:
    """One history from run folders in order; a later run replaces everything from its first step on.

    That is how a PBT trial continues: `runs/T` up to the exploit, then `runs/T-from-DONOR-STEP`.
    """
    records: list[TrainReport] = []
    grids: dict[int, str] = {}
    for uri in run_uris:
        run_records, run_grids = _read_records(uri), _read_grids(uri)
        if run_records:
            start = run_records[0]["step"]
            records = [r for r in records if r["step"] < start] + run_records
            grids = {step: grid for step, grid in grids.items() if step < start}
        grids.update(run_grids)
    return RunHistory(name=name, sources=list(run_uris), records=records, grids=grids)


def trial_runs(experiment_uri: str) -> dict[str, list[str]]:
    """trial id -> its run folders under runs/, its own first, then PBT continuations by exploit step."""
    runs: dict[str, list[tuple[int, str]]] = {}
    for name in _list(storage.join(experiment_uri, RUNS)):
        folder = parse_run_folder(name)
        order = -1 if folder.donor is None else folder.step if folder.step is not None else 0
        runs.setdefault(folder.trial, []).append((order, name))
    return {
        trial: [storage.join(experiment_uri, RUNS, name) for _, name in sorted(named)] for trial, named in runs.items()
    }


def best_evaluation(history: RunHistory) -> TrainReport | None:
    """The evaluation with the lowest finite FID (the first of equals)."""
    scored = [r for r in history.evaluations if finite(r.get("fid"))]
    return min(scored, key=lambda r: r["fid"]) if scored else None


def health_events(history: RunHistory) -> list[dict]:
    """Every health event any evaluation reported, once, by step."""
    seen = {}
    for record in history.evaluations:
        for event in (record.get("health") or {}).get("events") or []:
            if isinstance(event, dict) and finite(event.get("step")):
                seen.setdefault((event["step"], str(event.get("condition"))), event)
    return [seen[key] for key in sorted(seen)]


def _row_from_history(trial: str, history: RunHistory | None) -> dict:
    """A summary row for a trial that summary.json does not list (a sweep still running, or interrupted)."""
    row = TrialRow(trial=trial)
    if history is not None and history.records:
        best = best_evaluation(history)
        last_health = (history.evaluations[-1].get("health") or {}) if history.evaluations else {}
        row.best_fid = best["fid"] if best else None
        row.best_step = best["step"] if best else None
        row.last_step = history.records[-1]["step"]
        row.health = last_health.get("status")
        row.stop_reason = last_health.get("stop_reason")
        row.trained_s = history.records[-1].get("trained_s")
        row.images_seen = history.records[-1].get("images_seen")
    return row.to_dict()


def _sort_key(row: dict) -> float:
    return row["best_fid"] if finite(row.get("best_fid")) else math.inf


@dataclass
class Experiment:
    uri: str
    rows: list[dict]  # sorted by best FID, trials without one last
    searched: list[str]
    histories: dict[str, RunHistory]  # trial -> history, for trials that left a run folder with records
    fanova: dict[str, float] | None = None  # optuna's importance, from search.json (optuna sweeps)


def load_experiment(experiment_uri: str) -> Experiment:
    summary = read_summary(experiment_uri)
    runs = trial_runs(experiment_uri)
    rows = [dict(r, trial=str(r["trial"])) for r in summary or []]
    histories = {}
    for trial, uris in runs.items():
        history = load_run(uris, f"trial {trial}")
        if history.records:
            histories[trial] = history
    listed = {row["trial"] for row in rows}
    rows += [_row_from_history(trial, histories.get(trial)) for trial in sorted(runs) if trial not in listed]
    if not rows:
        raise UserError(f"{experiment_uri}: no trials ({SUMMARY} lists none and {RUNS}/ holds no run folders)")
    fanova = read_fanova(experiment_uri)
    return Experiment(experiment_uri, sorted(rows, key=_sort_key), searched_keys(summary or []), histories, fanova)


def read_grid(uri: str) -> bytes:
    data = storage.read_bytes(uri)
    if data is None:
        raise FileNotFoundError(f"{uri}: grid disappeared while the report was written")
    return data


def display_name(uri: str) -> str:
    """The folder's own name: `exp1` for ~/raygan_results/exp1, s3://bucket/sweeps/exp1 and `.` inside it."""
    return storage.basename(uri) if storage.is_uri(uri) else Path(uri).resolve().name
