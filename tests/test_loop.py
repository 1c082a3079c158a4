"""The training loop without Ray: an FID only with an evaluation, so a checkpoint between evaluations is
unscored; the per-run time budget ends a run scored and checkpointed."""

import json
import math
import re
import time

import pytest

from raygan.checkpoint import best_checkpoint, checkpoint_name, write_checkpoint
from raygan.cli import checkpoint_rows, main
from raygan.config import HEALTH_CONDITIONS, build_config
from raygan.data import indexed_batches, load_dataset
from raygan.metrics.health import HealthMonitor
from raygan.train.loop import run_progress, train_loop
from raygan.train.step import GANEngine

CADENCE = {
    "data": {"image_size": 16},
    "model": {"g_layers": 3, "d_layers": 3, "g_width": 8, "d_width": 8, "latent_dim": 16},
    "train": {"batch_size": 16, "steps": 20, "eval_every": 10, "checkpoint_every": 5, "report_every": 5},
}
FIDS = {10: 30.0, 20: 20.0}  # what the stand-in evaluation scores at each evaluation step


def run_with_checkpoints(run):
    """train_loop as ray_train drives it: rank 0 writes a checkpoint folder at each checkpoint report."""
    cfg = build_config(CADENCE)
    dataset = load_dataset(cfg.data)
    engine = GANEngine(cfg, dataset.channels, dataset.num_classes)
    reports = []

    def report(metrics, with_checkpoint):
        reports.append((metrics, with_checkpoint))
        if with_checkpoint:
            write_checkpoint(run / checkpoint_name(engine.step), engine, cfg, metrics)

    evaluate = lambda engine: {"fid": FIDS[engine.step], "kid": 0.0}  # noqa: E731
    train_loop(engine, indexed_batches(dataset, 16, 0), cfg, report=report, evaluate=evaluate)
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m, _ in reports))  # marks it a run
    return reports


@pytest.fixture(scope="module")
def run_and_reports(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    return run, run_with_checkpoints(run)


def test_only_evaluations_report_an_fid(run_and_reports):
    _, reports = run_and_reports
    assert [(m["step"], checkpointed) for m, checkpointed in reports] == [(s, True) for s in (5, 10, 15, 20)]
    assert {m["step"]: m.get("fid") for m, _ in reports} == {5: None, 10: 30.0, 15: None, 20: 20.0}


def test_unscored_checkpoints_say_so_and_are_never_best(run_and_reports, capsys):
    run, _ = run_and_reports
    rows = {row["step"]: row for row in checkpoint_rows(str(run))}
    assert {step: row["fid"] for step, row in rows.items()} == {5: None, 10: 30.0, 15: None, 20: 20.0}
    assert [step for step, row in rows.items() if row["best"]] == [20]
    assert best_checkpoint(str(run)).endswith(checkpoint_name(20))
    assert main(["checkpoints", "list", str(run)]) == 0
    listed = {line.split()[1]: line.split()[3] for line in capsys.readouterr().out.splitlines()[1:]}
    assert listed == {
        checkpoint_name(5): "unscored",
        checkpoint_name(10): "30",
        checkpoint_name(15): "unscored",
        checkpoint_name(20): "20",
    }


def test_with_the_scored_checkpoints_gone_the_best_is_the_latest_not_a_borrowed_score(tmp_path):
    run = tmp_path / "run"
    run_with_checkpoints(run)
    for step in (10, 20):  # as Ray's keep_checkpoints might have deleted them
        for f in (run / checkpoint_name(step)).iterdir():
            f.unlink()
        (run / checkpoint_name(step)).rmdir()
    assert best_checkpoint(str(run)).endswith(checkpoint_name(15))  # the documented fallback: none is scored
    assert all(row["fid"] is None for row in checkpoint_rows(str(run)))


BUDGETED = {
    "data": {"image_size": 16},
    "model": {"g_layers": 3, "d_layers": 3, "g_width": 8, "d_width": 8},
    "train": {
        "batch_size": 16,
        "steps": 10_000,
        "eval_every": 1000,
        "checkpoint_every": 1000,
        "report_every": 2,
        "time_budget_s": 0.5,
    },
}


def slow_batches(cfg, seconds=0.05):
    """Real batches that take at least `seconds` each, so the budget runs out after a few steps."""
    batches = indexed_batches(load_dataset(cfg.data), cfg.train.batch_size, cfg.seed)

    def batch(k):
        time.sleep(seconds)
        return batches(k)

    return batch


def budgeted_run(engine, cfg):
    reports = []
    monitor = HealthMonitor(cfg.health, cfg.train.stop_on, cfg.train.patience)
    train_loop(
        engine,
        slow_batches(cfg),
        cfg,
        report=lambda m, c: reports.append((m, c)),
        evaluate=lambda engine: {"fid": 50.0, "kid": 0.0},
        monitor=monitor,
        time_budget_s=cfg.train.time_budget_s,
    )
    return reports, monitor


def test_time_budget_stops_the_run_with_a_final_evaluation_and_checkpoint():
    cfg = build_config(BUDGETED)
    engine = GANEngine(cfg, 1, 10)
    reports, monitor = budgeted_run(engine, cfg)
    final, checkpointed = reports[-1]
    assert 0 < engine.step < cfg.train.steps and engine.step % cfg.train.report_every == 0
    assert checkpointed and final["evaluated"] and "kid" in final  # scored and saved although neither was due
    assert monitor.stop_reason.startswith("time budget") and final["health"]["stop_reason"] == monitor.stop_reason
    assert final["trained_s"] >= cfg.train.time_budget_s and engine.trained_s == final["trained_s"]
    assert final["images_seen"] == engine.step * cfg.train.batch_size
    assert all(m["trained_s"] < cfg.train.time_budget_s for m, _ in reports[:-1])  # no earlier report was over


def test_a_resumed_run_counts_the_seconds_it_trained_before():
    cfg = build_config(BUDGETED)
    engine = GANEngine(cfg, 1, 10)
    engine.load_state_dict({**engine.state_dict(), "step": 100, "trained_s": 10.0})  # as restored from a checkpoint
    reports, monitor = budgeted_run(engine, cfg)
    assert engine.step == 102 and len(reports) == 1 and monitor.stop_reason.startswith("time budget")
    assert engine.state_dict()["trained_s"] >= 10.0


def test_without_a_budget_the_run_reports_its_cost_and_runs_to_the_end():
    cfg = build_config(BUDGETED, {"train.time_budget_s": None, "train.steps": 4})
    engine = GANEngine(cfg, 1, 10)
    reports, monitor = budgeted_run(engine, cfg)
    assert engine.step == 4 and monitor.stop_reason is None
    assert [m["images_seen"] for m, _ in reports] == [32, 64] and reports[-1][0]["trained_s"] > 0


def test_learning_rates_follow_their_cosine_over_the_run_by_steps():
    """lr 2e-4 -> lr_end 2e-5 for G, D constant: at report steps 2, 4, 6, 8 of 8 the cosine's values."""
    cfg = build_config(BUDGETED, {"train.time_budget_s": None, "train.steps": 8, "optim.g.lr_end": 2e-5})
    reports, _ = budgeted_run(GANEngine(cfg, 1, 10), cfg)
    g_rates = [m["lr_g"] for m, _ in reports]
    # 2e-5 + 1.8e-4 * (1 + cos(pi * p)) / 2 at p = 1/4, 1/2, 3/4, 1
    assert g_rates == pytest.approx([1.7363961e-4, 1.1e-4, 4.6360390e-5, 2e-5], rel=1e-6)
    assert [m["lr_d"] for m, _ in reports] == [cfg.optim.d.lr] * 4


def test_under_a_time_budget_the_schedule_follows_the_seconds_trained():
    cfg = build_config(BUDGETED, {"train.time_budget_s": 1.0, "optim.d.lr_end": 0.0})
    assert run_progress(cfg.train, step=10, trained_s=0.25) == 0.25  # the budget ends it before train.steps
    assert run_progress(cfg.train, step=cfg.train.steps // 2, trained_s=0.25) == 0.5  # steps end it first
    assert run_progress(cfg.train, step=10, trained_s=2.5) == 1.0
    engine = GANEngine(cfg, 1, 10)
    engine.load_state_dict({**engine.state_dict(), "trained_s": 0.5})  # as restored: half the budget spent
    reports, _ = budgeted_run(engine, cfg)
    assert len(reports) >= 2 and reports[-1][0]["lr_d"] == 0.0  # at the budget: lr_end
    for metrics, _ in reports:  # lr 2e-4 -> 0 by the seconds trained, as each report saw them
        progress = min(metrics["trained_s"], 1.0)
        assert metrics["lr_d"] == pytest.approx(2e-4 * (1 + math.cos(math.pi * progress)) / 2, rel=1e-9, abs=1e-15)
        assert metrics["lr_g"] == cfg.optim.g.lr


def test_every_report_keeps_the_train_report_contract():
    """The keys TrainReport names are there: the required ones in every report, the evaluation's and the
    health monitor's at an evaluation; any other key is a loss or rate the engine tracked, by its name."""
    from raygan.train.train_report import HealthSummary, TrainReport

    cfg = build_config(BUDGETED, {"train.time_budget_s": None, "train.steps": 4, "train.eval_every": 4})
    reports, _ = budgeted_run(GANEngine(cfg, 1, 10), cfg)
    verdict = {"new_best", "best_fid", "best_step", "health", *(f"health_{c}" for c in HEALTH_CONDITIONS)}
    for report, _ in reports:
        assert TrainReport.__required_keys__ <= report.keys()
        others = report.keys() - TrainReport.__annotations__.keys()
        assert all(re.fullmatch(r"[dg]_\w+|lr_[dg]|augment_p", key) for key in others), others
    final = reports[-1][0]
    assert final["evaluated"] and verdict <= final.keys()
    assert HealthSummary.__required_keys__ <= final["health"].keys() <= HealthSummary.__annotations__.keys()
