"""Sweeps: search-space validation, every shipped config, and real sweeps on local Ray."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from raygan.cli import main
from raygan.config import build_config
from raygan.tune import run_sweep

CONFIGS = sorted(Path("tune_configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_passes_dry_run(config, capsys):
    assert main(["tune", str(config), "--dry-run"]) == 0
    assert main(["train", str(config), "--dry-run"]) == 0


@pytest.mark.parametrize(
    "space, needle",
    [
        ('{"optim.g.lrr": {"choice": [1]}}', "tune.search_space.optim.g.lrr: optim.g.lrr is not a config key"),
        ('{"optim.g": {"choice": [1]}}', "is a section"),
        ('{"optim.g.lr": {"gaussian": [0, 1]}}', "unknown distribution 'gaussian'"),
        ('{"optim.g.lr": {"loguniform": [1.0e-3]}}', "loguniform takes a list"),
        ('{"optim.g.lr": {"loguniform": [1.0e-3, 1.0e-4]}}', "must be below high"),
        ('{"optim.g.lr": {"loguniform": [0, 1]}}', "loguniform needs low > 0"),
        ('{"loss.name": {"choice": [gan, lsgan]}}', "value 'lsgan' is invalid: loss.name"),
        ('{"model.g_layers": {"grid": [3, 5]}}', "value 5 is invalid: model.g_layers"),
        ('{"optim.g.lr": 0.1}', "expected one of"),
    ],
)
def test_invalid_search_spaces_exit_2(space, needle, capsys, tmp_path):
    code = main(
        ["tune", "tune_configs/smoke.yaml", "--set", f"tune.search_space={space}", "--storage", str(tmp_path / "store")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: tune.search_space") and needle in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "store").exists()


def test_pbt_mutations_must_be_searched(capsys):
    code = main(
        [
            "tune",
            "tune_configs/pbt.yaml",
            "--set",
            'tune.scheduler={"name": "pbt", "hyperparam_mutations": {"train.ema": {"uniform": [0, 0.5]}}}',
        ]
    )
    assert code == 2 and "tune.scheduler.hyperparam_mutations: train.ema" in capsys.readouterr().err


TINY = {
    "data": {"image_size": 16},
    "model": {"g_layers": 3, "d_layers": 3, "g_width": 16, "d_width": 16, "latent_dim": 16},
    "train": {"batch_size": 32, "steps": 60, "eval_every": 20, "checkpoint_every": 20, "report_every": 20},
    "eval": {"num_samples": 200},
    "scaling": {"num_workers": 1},
}


@pytest.mark.slow
def test_asha_stops_a_deliberately_bad_trial(ray_session, tmp_path):
    """G frozen (its loss never above 1000) cannot improve: ASHA stops it at the first milestone. The pointer
    checkpoints a trial hands Tune leave nothing behind in the temporary folder."""
    pointers_before = set(Path(tempfile.gettempdir()).glob("raygan-pointer-*"))
    cfg = build_config(
        {
            **TINY,
            "tune": {
                "num_samples": 1,
                "max_concurrent": 1,
                "scheduler": {"name": "asha", "grace_period": 20, "reduction_factor": 2},
                "search_space": {"train.g_loss_threshold": {"grid": [None, 1000.0]}},
            },
        }
    )
    result = run_sweep(cfg, "asha", str(tmp_path))
    rows = {row["train.g_loss_threshold"]: row for row in result["rows"]}
    assert rows[None]["stop_reason"] == "completed" and rows[None]["last_step"] == 60
    assert rows[1000.0]["stop_reason"] == "stopped by the scheduler" and rows[1000.0]["last_step"] < 60
    assert result["best_config"] == {"train.g_loss_threshold": None}
    assert Path(result["best_checkpoint"], "generator.pt").is_file()
    summary = json.loads((tmp_path / "asha" / "summary.json").read_text())
    assert len(summary) == 2 and (tmp_path / "asha" / "summary.csv").is_file()
    assert set(Path(tempfile.gettempdir()).glob("raygan-pointer-*")) <= pointers_before


def _searcher_study(experiment: Path):
    """The optuna study in the newest searcher state Tune saved with the experiment (None before the first)."""
    import pickle

    # named by session start; not by mtime: Tune's final sync rewrites every session's file within a millisecond
    states = sorted(experiment.glob("searcher-state-*.pkl"))
    if not states:
        return None
    try:
        return pickle.loads(states[-1].read_bytes())["_ot_study"]
    except (EOFError, pickle.UnpicklingError):  # caught mid-write
        return None


@pytest.mark.slow
def test_a_sweep_whose_driver_is_killed_resumes_without_rerunning_finished_trials_or_forgetting_them(tmp_path):
    """An optuna sweep's driver is killed while its second trial runs, once the first trial's FID has reached
    the saved searcher; --resume leaves the finished run alone, reruns the other and tells it to the same study."""
    import os
    import signal
    import time

    import yaml
    from optuna.trial import TrialState

    config = tmp_path / "sweep.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                **TINY,
                "tune": {
                    "num_samples": 2,
                    "max_concurrent": 1,
                    "scheduler": {"name": "fifo"},
                    "search_alg": {"name": "optuna"},
                    "search_space": {"optim.d.lr": {"loguniform": [1.0e-4, 1.0e-3]}},
                },
            }
        )
    )
    command = [sys.executable, "-m", "raygan.tune", str(config), "--storage", str(tmp_path), "--name", "sweep"]
    experiment, runs = tmp_path / "sweep", tmp_path / "sweep" / "runs"

    def told() -> list:
        study = _searcher_study(experiment)
        return [t for t in study.trials if t.state == TrialState.COMPLETE] if study else []

    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 600
        while time.time() < deadline:  # one trial at a time: the second starts once the first has finished
            if runs.is_dir() and len(list(runs.iterdir())) == 2 and told():
                break
            time.sleep(1)
        os.kill(driver.pid, signal.SIGKILL)  # Ray's processes share its fate
        driver.wait()
    first = told()
    assert len(first) == 1, (tmp_path / "first.log").read_text()[-3000:]
    finished = [r for r in runs.iterdir() if (r / "checkpoint_0000060").is_dir()]
    assert len(finished) == 1, (tmp_path / "first.log").read_text()[-3000:]

    # raygan's files only: if Tune had not yet recorded the trial as finished, it restores it at its last
    # step, which trains nothing but rewrites Ray Train's .validate_storage_marker
    def raygan_files() -> dict[str, float]:
        return {p.name: p.stat().st_mtime for p in finished[0].iterdir() if not p.name.startswith(".")}

    before = raygan_files()
    with open(tmp_path / "resumed.log", "w") as log:  # kept with the test's tmp_path for a look afterwards
        resumed = subprocess.run(
            command + ["--resume", "--json"], stdout=subprocess.PIPE, stderr=log, text=True, timeout=900
        )
    assert resumed.returncode == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["trials"] == 2 and summary["best_fid"] > 0
    assert raygan_files() == before  # not rerun
    assert all((r / "checkpoint_0000060").is_dir() for r in runs.iterdir())
    study = _searcher_study(experiment)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2  # the second told to the same study
    assert study.trials[0].params == first[0].params and study.trials[0].value == first[0].value


@pytest.mark.slow
def test_pbt_exploit_continues_from_the_donor_step_with_its_own_mutated_values(ray_session, tmp_path):
    """Two trials in lockstep, perturbation points every evaluation (4 in all).

    PBT scores a trial only at its perturbation points and clones only a top trial that has saved at
    one, so with two trials of different scores an exploit happens by the third point at the latest.
    A restored run is `runs/<trial>-from-<donor>-<step>`; its config.json is what it trained with.
    """
    from raygan.train.runlog import read_metrics

    cfg = build_config(
        {
            **TINY,
            "train": {**TINY["train"], "steps": 80, "keep_checkpoints": 10},
            "tune": {
                "num_samples": 1,
                "max_concurrent": 2,
                "scheduler": {"name": "pbt", "perturbation_interval": 20, "quantile_fraction": 0.5},
                "search_space": {
                    "train.g_loss_threshold": {"grid": [None, 1000.0]},
                    "optim.g.lr": {"loguniform": [1.0e-4, 1.0e-3]},
                },
            },
        }
    )
    result = run_sweep(cfg, "pbt", str(tmp_path))
    runs = tmp_path / "pbt" / "runs"

    def run_config(run: Path) -> dict:
        return json.loads(next(run.glob("checkpoint_*/config.json")).read_text())

    def run_holding(trial: str, step: int) -> Path:
        """The donor's run that reported `step` (a donor may itself have been restored)."""
        candidates = [r for r in runs.iterdir() if r.name.split("-from-")[0] == trial]
        return max(
            (r for r in candidates if any(m["step"] == step for m in read_metrics(str(r)))),
            key=lambda r: int(r.name.rsplit("-", 1)[1]) if "-from-" in r.name else 0,
        )

    exploits = sorted((r for r in runs.iterdir() if "-from-" in r.name), key=lambda r: int(r.name.rsplit("-", 1)[1]))
    assert exploits, f"no exploit: {sorted(r.name for r in runs.iterdir())}"
    for run in exploits:
        donor, step = run.name.split("-from-")[1].rsplit("-", 1)
        step = int(step)
        records = read_metrics(str(run))
        if step == cfg.train.steps:  # exploited at the last point: restored with nothing left to train
            assert records == []
            continue
        donor_run = run_holding(donor, step)
        assert records[0]["step"] == step + TINY["train"]["report_every"]  # picks up where the donor was
        donor_lr = next(m["lr_g"] for m in read_metrics(str(donor_run)) if m["step"] == step)
        own, donors = run_config(run), run_config(donor_run)
        assert {m["lr_g"] for m in records} == {own["optim"]["g"]["lr"]} != {donor_lr}  # its own, mutated
        assert own["train"]["g_loss_threshold"] == donors["train"]["g_loss_threshold"]  # the rest: the donor's
    final = {row["trial"]: row for row in result["rows"]}
    for run in exploits:  # sorted by step: each trial's latest run wins
        final[run.name.split("-from-")[0]]["latest_run"] = run
    for row in final.values():
        assert row["last_step"] == cfg.train.steps and row["stop_reason"] == "completed"
        if "latest_run" in row and read_metrics(str(row["latest_run"])):  # an empty last run has no config.json
            assert row["optim.g.lr"] == pytest.approx(run_config(row["latest_run"])["optim"]["g"]["lr"])


def _result(trial: str, config: dict, metrics: dict | None = None, error: BaseException | None = None):
    """What the summary reads of a ray.tune.Result: its folder, config, last metrics and error."""
    from types import SimpleNamespace

    path = f"/x/sweep/trial_{trial}_{trial[-1]}_2026-11-23_05-20-00"
    return SimpleNamespace(path=path, config=config, metrics=metrics or {"trial_id": trial}, error=error)


def test_tune_sees_evaluations_only_each_with_the_runs_best_checkpoint_so_far():
    from raygan.tune import EvaluationsForTune

    select = EvaluationsForTune()
    assert select({"step": 10, "evaluated": False}, None) is None  # a plain report: not for Tune
    first = select({"step": 20, "evaluated": True, "new_best": True, "fid": 9.0}, "/r/checkpoint_0000020")
    assert first["best_checkpoint"] == "/r/checkpoint_0000020" and first["fid"] == 9.0
    assert select({"step": 30, "evaluated": False}, "/r/checkpoint_0000030") is None
    worse = select({"step": 40, "evaluated": True, "new_best": False, "fid": 12.0}, "/r/checkpoint_0000040")
    assert worse["best_checkpoint"] == "/r/checkpoint_0000020"  # the best stays the best


def test_a_trial_restored_at_the_last_pbt_point_keeps_its_own_id_and_row_in_the_summary():
    """PBT restoring a trial at its last perturbation point leaves the donor's metrics as its Result's."""
    import pandas as pd

    from raygan.tune import summary_rows

    donor_metrics = {"trial_id": "b88b0_00000", "step": 100, "best_fid": 88.6}
    results = [_result(f"b88b0_0000{i}", {}, donor_metrics) for i in (0, 1)]
    table = pd.DataFrame([{"trial_id": f"b88b0_0000{i}", "step": 100, "best_fid": 88.6 + i} for i in (0, 1)])
    rows = summary_rows(table, results, [], 100, {})
    assert [(row["trial"], row["best_fid"]) for row in rows] == [("b88b0_00000", 88.6), ("b88b0_00001", 89.6)]


def test_the_summary_gives_back_the_values_tunes_table_turns_into_floats_and_nan():
    """The table is one pandas frame for all trials (as ResultGrid.get_dataframe builds it): a column with
    a gap or with 0 beside 0.1 holds floats and NaN. A trial that failed before reporting is not in it."""
    import pandas as pd

    from raygan.tune import summary_rows

    space = {
        "loss.label_smoothing": {"choice": [0, 0.1]},
        "train.d_loss_threshold": {"grid": [None, 0.2]},
        "loss.label_flip": {"quniform": [0.0, 0.3, 0.1]},
    }
    reported = [
        {
            "trial_id": "a0000_00000",
            "step": 40,
            "best_fid": 80.5,
            "best_step": 40,
            "images_seen": 1280,
            "trained_s": 3.5,
            "best_checkpoint": "/x/runs/a0000_00000/checkpoint_0000040",
            "health/status": "healthy",
            "health/stop_reason": None,
            "config/loss.label_smoothing": 0,
            "config/train.d_loss_threshold": None,
            "config/loss.label_flip": 0.1234,  # BOHB's proposal, off the steps
        },
        {
            "trial_id": "a0000_00001",
            "step": 20,
            "health/status": "collapse",
            "health/stop_reason": "collapse: samples cover 1 of 10 classes",
            "config/loss.label_smoothing": 0.1,
            "config/train.d_loss_threshold": 0.2,
            "config/loss.label_flip": 0.0,
        },
        {"trial_id": "a0000_00002", "step": 20, "best_fid": 95.0, "best_step": 20, "images_seen": 640},
    ]
    config = {"loss.label_smoothing": 0, "train.d_loss_threshold": 0.2, "loss.label_flip": 0.2}
    results = [
        _result("a0000_00000", {}),
        _result("a0000_00001", {}),
        _result("a0000_00002", {}),
        _result("a0000_00003", config, error=RuntimeError("out of memory")),
    ]
    rows = summary_rows(pd.DataFrame(reported), results, list(space), 40, space)
    assert [row["trial"] for row in rows] == ["a0000_00000", "a0000_00002", "a0000_00001", "a0000_00003"]
    first, scheduled, collapsed, failed = rows
    assert first == {
        "trial": "a0000_00000",
        "order": 0,
        "loss.label_smoothing": 0,
        "train.d_loss_threshold": None,
        "loss.label_flip": 0.1,
        "best_fid": 80.5,
        "best_step": 40,
        "last_step": 40,
        "health": "healthy",
        "stop_reason": "completed",
        "trained_s": 3.5,
        "images_seen": 1280,
        "best_checkpoint": "/x/runs/a0000_00000/checkpoint_0000040",
    }
    assert [type(first[key]) for key in ("loss.label_smoothing", "best_step", "last_step", "images_seen")] == [int] * 4
    assert scheduled["stop_reason"] == "stopped by the scheduler" and scheduled["best_step"] == 20
    assert scheduled["health"] is None and scheduled["best_checkpoint"] is None
    assert collapsed["stop_reason"] == "collapse: samples cover 1 of 10 classes" and collapsed["best_fid"] is None
    assert failed["stop_reason"] == "error: RuntimeError: out of memory" and failed["last_step"] is None
    assert {key: failed[key] for key in space} == config


# ---------------------------------------------------------------------------------------------
# PBT's explore step, called as PBT calls it, without Ray running

EDGY_SPACE = {
    "train.ema": {"uniform": [0.99, 0.9999]},  # x1.2 would pass 1: an invalid config
    "loss.label_smoothing": {"uniform": [0.0, 0.45]},
    "model.d_dropout": {"quniform": [0.0, 0.6, 0.15]},
    "optim.g.lr": {"loguniform": [1.0e-4, 1.0e-3]},
    "model.g_layers": {"randint": [2, 5]},  # 16x16: 2..4 layers
    "model.g_activation": {"choice": ["relu", "leaky_relu"]},
}


def explore_chain(scheduler_options: dict, space: dict, rounds: int, seed: int = 0) -> list[dict]:
    """`rounds` exploits in a row, each perturbing the last config, through the scheduler raygan builds."""
    import random
    from types import SimpleNamespace

    from raygan.tune import make_scheduler

    cfg = build_config({**TINY, "tune": {"scheduler": {"name": "pbt", **scheduler_options}, "search_space": space}})
    scheduler = make_scheduler(cfg)
    random.seed(seed)
    config = {
        "train.ema": 0.9999,
        "loss.label_smoothing": 0.45,
        "model.d_dropout": 0.6,
        "optim.g.lr": 1.0e-3,
        "model.g_layers": 4,
        "model.g_activation": "relu",
    }  # every range at its top: x1.2 crosses it
    chain = []
    for _ in range(rounds):
        config, _ = scheduler._get_new_config(None, SimpleNamespace(config=config))  # what PBT's exploit calls
        chain.append(config)
    return chain


@pytest.mark.parametrize(
    "options", [{"resample_probability": 0.0, "perturbation_factors": [1.2]}, {}], ids=["always-x1.2", "defaults"]
)
def test_pbt_mutations_stay_inside_the_searched_ranges(options):
    for config in explore_chain(options, EDGY_SPACE, 200):
        assert 0.99 <= config["train.ema"] <= 0.9999
        assert 0.0 <= config["loss.label_smoothing"] <= 0.45
        assert config["model.d_dropout"] in (0.0, 0.15, 0.3, 0.45, 0.6)
        assert 1.0e-4 <= config["optim.g.lr"] <= 1.0e-3
        assert type(config["model.g_layers"]) is int and 2 <= config["model.g_layers"] <= 4
        assert config["model.g_activation"] in ("relu", "leaky_relu")
        build_config(TINY, config)  # the exploited trial's config is valid


def test_pbt_layer_counts_move_to_neighbours_and_reach_every_value():
    chain = explore_chain({"resample_probability": 0.0}, EDGY_SPACE, 100)
    layers = [4] + [c["model.g_layers"] for c in chain]
    assert all(abs(a - b) <= 1 for a, b in zip(layers, layers[1:])) and set(layers) == {2, 3, 4}


def test_pbt_honours_the_ranges_given_in_hyperparam_mutations():
    narrow = {"train.ema": {"uniform": [0.99, 0.995]}, "model.g_layers": {"choice": [3, 4]}}
    chain = explore_chain({"hyperparam_mutations": narrow}, EDGY_SPACE, 200)
    assert all(0.99 <= c["train.ema"] <= 0.995 and c["model.g_layers"] in (3, 4) for c in chain)
    assert all(c["loss.label_smoothing"] == 0.45 for c in chain)  # not named in the mutations: never touched


def test_hyperparam_mutations_are_validated_like_the_search_space(capsys):
    mutations = '{"optim.g.lr": {"uniform": [0.0, 1.0e-3]}}'
    code = main(
        [
            "tune",
            "tune_configs/pbt.yaml",
            "--set",
            f'tune.scheduler={{"name": "pbt", "hyperparam_mutations": {mutations}}}',
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(
        "error: tune.scheduler.hyperparam_mutations.optim.g.lr: value 0.0 is invalid"
    ), err


def test_a_pbt_exploit_continues_only_from_a_complete_checkpoint(tmp_path):
    from raygan.tune import complete_checkpoint

    run = tmp_path / "runs" / "donor"

    def checkpoint(step: int, complete: bool) -> str:
        folder = run / f"checkpoint_{step:07d}"
        folder.mkdir(parents=True)
        (folder / "state.pt").write_bytes(b"x" * 10)
        (folder / "manifest.json").write_text(json.dumps({"state.pt": 10 if complete else 11}))
        return str(folder)

    first, second, third = checkpoint(20, True), checkpoint(40, True), checkpoint(60, False)
    assert complete_checkpoint(second) == second
    assert complete_checkpoint(third) == second  # cut short: the newest complete one instead
    assert complete_checkpoint(str(run / "checkpoint_0000080")) == second  # deleted by keep_checkpoints
    for folder in (first, second):
        Path(folder, "manifest.json").unlink()
    with pytest.raises(RuntimeError, match="no complete checkpoint"):
        complete_checkpoint(third)


# ---------------------------------------------------------------------------------------------
# searchers: validated before Ray starts, built from raygan's search-space syntax, seeded

SEARCHABLE = {
    "optim.g.lr": {"loguniform": [1.0e-4, 1.0e-3]},
    "model.g_layers": {"randint": [2, 5]},
    "loss.label_smoothing": {"quniform": [0.0, 0.3, 0.1]},
    "model.g_activation": {"choice": ["relu", "leaky_relu"]},
    "train.ema": {"uniform": [0.0, 0.999]},
}


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (
            ['tune.search_alg={"name": "hyperopt"}'],
            "tune.search_alg.name: 'hyperopt' is not one of: random, optuna, bohb",
        ),
        (['tune.search_alg={"name": "optuna", "n_trials": 3}'], "tune.search_alg.n_trials: unknown option"),
        (["tune.search_alg.name=optuna"], "tune.search_space.optim.d.lr: grid values need search_alg random"),
        (
            [
                "tune.search_alg.name=optuna",
                "tune.scheduler.name=pbt",
                'tune.search_space={"optim.d.lr": {"choice": [1.0e-4]}}',
            ],
            "tune.search_alg.name: pbt draws and mutates its own configs",
        ),
        (
            [
                "tune.search_alg.name=bohb",
                "tune.scheduler.name=fifo",
                'tune.search_space={"optim.d.lr": {"choice": [1.0e-4]}}',
            ],
            "tune.scheduler: fifo: search_alg bohb brings its own HyperBand",
        ),
    ],
)
def test_bad_search_algs_exit_2_naming_the_key(overrides, needle, capsys, tmp_path):
    args = [a for o in overrides for a in ("--set", o)]
    code = main(["tune", "tune_configs/smoke.yaml", *args, "--storage", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "store").exists()


def test_a_missing_searcher_package_is_a_config_error_naming_it(monkeypatch):
    import importlib.util

    from raygan.errors import ConfigError
    from raygan.tune import make_search_alg

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "hpbandster" else real(name, *a))
    cfg = build_config({**TINY, "tune": {"search_alg": {"name": "bohb"}, "search_space": SEARCHABLE}})
    with pytest.raises(ConfigError, match=r"tune.search_alg.name: bohb needs the package hpbandster"):
        make_search_alg(cfg)


@pytest.mark.parametrize("name", ["optuna", "bohb"])
def test_searchers_take_raygan_spaces_are_seeded_and_limited_to_max_concurrent(name):
    from raygan.tune import make_search_alg, to_tune_domain

    def proposals(seed: int) -> list[dict]:
        cfg = build_config(
            {
                **TINY,
                "seed": seed,
                "tune": {"search_alg": {"name": name}, "max_concurrent": 2, "search_space": SEARCHABLE},
            }
        )
        searcher = make_search_alg(cfg)
        space = {key: to_tune_domain(spec) for key, spec in SEARCHABLE.items()}
        assert searcher.set_search_properties("fid", "min", space)
        proposed = [searcher.suggest(f"t{i}") for i in range(3)]
        assert proposed[2] is None  # ConcurrencyLimiter: two running trials at most
        for i, _config in enumerate(proposed[:2]):
            searcher.on_trial_complete(f"t{i}", {"fid": 10.0 + i, "training_iteration": 1, "step": 1})
        return proposed[:2] + [searcher.suggest("t2")]

    first = proposals(0)
    assert first == proposals(0) and first != proposals(1)
    for config in first:
        assert 1.0e-4 <= config["optim.g.lr"] <= 1.0e-3 and config["model.g_layers"] in (2, 3, 4)
        assert config["model.g_activation"] in ("relu", "leaky_relu")


def test_random_search_draws_the_same_configs_from_the_same_seed(tmp_path):
    from ray.tune.experiment import Experiment

    from raygan.tune import make_search_alg, to_tune_domain

    def drawn(seed: int) -> list[dict]:
        cfg = build_config({**TINY, "seed": seed, "tune": {"max_concurrent": 8, "search_space": SEARCHABLE}})
        sampler = make_search_alg(cfg)
        space = {key: to_tune_domain(spec) for key, spec in SEARCHABLE.items()}
        experiment = Experiment("sweep", lambda config: None, config=space, num_samples=3, storage_path=str(tmp_path))
        sampler.add_configurations([experiment])
        return [trial.config for trial in iter(sampler.next_trial, None)]

    first = drawn(0)
    assert len(first) == 3 and first == drawn(0) and first != drawn(1)


def test_tpe_models_after_a_quarter_of_the_sweep_not_after_optunas_ten_random_trials():
    from raygan.tune import make_search_alg, tpe_startup_trials

    assert [tpe_startup_trials(n) for n in (2, 16, 24, 64)] == [4, 4, 6, 10]
    cfg = build_config(
        {**TINY, "tune": {"num_samples": 24, "search_alg": {"name": "optuna"}, "search_space": SEARCHABLE}}
    )
    sampler = make_search_alg(cfg).searcher._sampler
    assert sampler._n_startup_trials == 6 and sampler._multivariate and sampler._constant_liar


def test_bohb_proposals_are_put_on_quniform_steps():
    from raygan.tune import on_steps

    assert on_steps(SEARCHABLE, {"loss.label_smoothing": 0.1234, "train.ema": 0.1234}) == {
        "loss.label_smoothing": 0.1,
        "train.ema": 0.1234,
    }


@pytest.mark.slow
def test_a_sweep_whose_every_trial_fails_exits_1_with_the_first_error_after_the_retries(ray_session, tmp_path, capsys):
    """The runs' folder is taken by a file: nothing validation can see, and every trial fails on it at run time."""
    import yaml

    config = tmp_path / "sweep.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                **TINY,
                "tune": {
                    "num_samples": 1,
                    "max_concurrent": 1,
                    "scheduler": {"name": "fifo"},
                    "max_failures": 1,
                    "search_space": {"optim.d.lr": {"choice": [2.0e-4, 5.0e-4]}},
                },
            }
        )
    )
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "runs").write_text("a file where the runs' folder goes")
    code = main(["tune", str(config), "--storage", str(tmp_path), "--name", "sweep"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("error: every trial failed; the first: "), err[-5:]
    assert "runs" in err[-1] and "Error" in err[-1], err[-1]  # what failed, not only which process
    errors = sorted((tmp_path / "sweep").glob("trial_*/error.txt"))
    assert len(errors) == 1 and "Failure # 2" in errors[0].read_text()  # tried twice
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert all(row["stop_reason"].startswith("error: ") for row in summary)


@pytest.mark.slow
def test_bohb_pauses_and_resumes_trials_on_their_own_runs(ray_session, tmp_path):
    """HyperBand for BOHB pauses trials at its milestones and resumes the promising ones later: each
    resumed trial continues its own run, trains with quniform values on their steps, and keeps its best."""
    from raygan.train.runlog import read_metrics

    cfg = build_config(
        {
            **TINY,
            "tune": {
                "num_samples": 3,
                "max_concurrent": 1,
                "search_alg": {"name": "bohb"},
                "search_space": {
                    "optim.d.lr": {"loguniform": [1.0e-4, 1.0e-3]},
                    "loss.label_smoothing": {"quniform": [0.0, 0.3, 0.1]},
                },
            },
        }
    )
    result = run_sweep(cfg, "bohb", str(tmp_path))
    runs = tmp_path / "bohb" / "runs"
    assert len(result["rows"]) == 3 and result["failed"] == 0
    for row in result["rows"]:
        run = runs / row["trial"]
        steps = [m["step"] for m in read_metrics(str(run))]
        assert steps == list(range(20, steps[-1] + 1, 20))  # resumed, never restarted: each step once
        # the run may log one evaluation past Tune's last result: the one in flight when HyperBand stopped it
        assert row["last_step"] in steps[-2:]
        trained = json.loads(next(run.glob("checkpoint_*/config.json")).read_text())["loss"]["label_smoothing"]
        assert row["loss.label_smoothing"] == trained and trained in (0.0, 0.1, 0.2, 0.3)
        assert Path(row["best_checkpoint"], "generator.pt").is_file()
    assert any(row["last_step"] == 60 for row in result["rows"])


def test_fanova_importance_finds_the_value_that_decides_fid():
    import random

    from raygan.tune import fanova_importance

    space = {
        "optim.g.lr": {"loguniform": [1.0e-4, 1.0e-3]},
        "model.g_layers": {"randint": [2, 5]},
        "model.g_activation": {"choice": ["relu", "leaky_relu"]},
    }
    draw = random.Random(0)
    rows = []
    for i in range(12):
        row = {
            "trial": f"t{i}",
            "optim.g.lr": 10 ** draw.uniform(-4, -3),
            "model.g_layers": draw.randint(2, 4),
            "model.g_activation": draw.choice(["relu", "leaky_relu"]),
        }
        rows.append({**row, "best_fid": 100 * row["optim.g.lr"] / 1.0e-3 + draw.random()})  # lr decides, noise aside
    shares = fanova_importance(rows, space, seed=0)
    assert set(shares) == set(space) and max(shares, key=shares.get) == "optim.g.lr" and shares["optim.g.lr"] > 0.8
    assert fanova_importance(rows[:2], space, seed=0) is None and shares == fanova_importance(rows, space, seed=0)


# ---------------------------------------------------------------------------------------------
# raygan's trial in a user's own Tuner

DIGITS_8X8 = {
    "data": {"image_size": 8},
    "model": {"g_layers": 2, "d_layers": 2, "g_width": 8, "d_width": 8, "latent_dim": 8},
    "train": {"batch_size": 16, "steps": 20, "eval_every": 20, "checkpoint_every": 20, "report_every": 20},
    "eval": {"num_samples": 64},
    "scaling": {"num_workers": 1},
}


@pytest.mark.slow
def test_a_users_own_tuner_runs_raygans_trainable_with_their_space_and_callback(ray_session, tmp_path):
    """README's "Your own Tuner": dotted keys as the param_space, the user's callback sees raygan's evaluations."""
    from ray import tune

    from raygan.errors import ConfigError
    from raygan.tune import trainable, trial_rows

    class FidsSeen(tune.Callback):
        def __init__(self):
            self.fids: dict[str, list[float]] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.fids.setdefault(trial.trial_id, []).append(result["fid"])

    seen = FidsSeen()
    grid = tune.Tuner(
        trainable(DIGITS_8X8, storage=str(tmp_path / "mine")),
        param_space={"optim.g.lr": tune.grid_search([1.0e-4, 1.0e-3])},
        tune_config=tune.TuneConfig(metric="fid", mode="min", max_concurrent_trials=2),
        run_config=tune.RunConfig(name="mine", storage_path=str(tmp_path), callbacks=[seen]),
    ).fit()
    assert grid.num_errors == 0 and len(grid) == 2
    assert sorted(result.config["optim.g.lr"] for result in grid) == [1.0e-4, 1.0e-3]
    rows = trial_rows(grid, ["optim.g.lr"], 20)
    for row in rows:
        assert seen.fids[row["trial"]] == [row["best_fid"]] and row["best_fid"] > 0
        assert row["last_step"] == 20 and row["stop_reason"] == "completed"
        assert Path(row["best_checkpoint"], "generator.pt").is_file()
        assert Path(row["best_checkpoint"]).parent == tmp_path / "mine" / "runs" / row["trial"]

    with pytest.raises(ConfigError, match="param_space: optim.g.lrr is not a config key"):
        tune.Tuner(
            trainable(DIGITS_8X8, storage=str(tmp_path / "bad")),
            param_space={"optim.g.lrr": tune.loguniform(1.0e-4, 1.0e-3)},
            run_config=tune.RunConfig(name="bad", storage_path=str(tmp_path)),
        ).fit()
