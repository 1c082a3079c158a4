"""The loop's reports: an FID only with an evaluation, so a checkpoint between evaluations is unscored."""

import json

import pytest

from raygan.checkpoint import best_checkpoint, checkpoint_name, write_checkpoint
from raygan.cli import checkpoint_rows, main
from raygan.config import build_config
from raygan.data import indexed_batches, load_dataset
from raygan.train.loop import train_loop
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
    assert listed == {checkpoint_name(5): "unscored", checkpoint_name(10): "30", checkpoint_name(15): "unscored",
                      checkpoint_name(20): "20"}  # fmt: skip


def test_with_the_scored_checkpoints_gone_the_best_is_the_latest_not_a_borrowed_score(tmp_path):
    run = tmp_path / "run"
    run_with_checkpoints(run)
    for step in (10, 20):  # as Ray's keep_checkpoints might have deleted them
        for f in (run / checkpoint_name(step)).iterdir():
            f.unlink()
        (run / checkpoint_name(step)).rmdir()
    assert best_checkpoint(str(run)).endswith(checkpoint_name(15))  # the documented fallback: none is scored
    assert all(row["fid"] is None for row in checkpoint_rows(str(run)))


def test_ray_ranks_an_unscored_checkpoint_last():
    """Ray keeps checkpoints by "fid" (min); a checkpoint report without one would rank first (-inf)."""
    from raygan.train.ray_train import UNSCORED_FID, ray_metrics

    assert ray_metrics({"step": 5}, with_checkpoint=True) == {"step": 5, "fid": UNSCORED_FID}
    assert ray_metrics({"step": 10, "fid": 30.0}, with_checkpoint=True) == {"step": 10, "fid": 30.0}
    assert ray_metrics({"step": 5}, with_checkpoint=False) == {"step": 5}
    assert json.loads(json.dumps(UNSCORED_FID)) == UNSCORED_FID  # Ray stores scores as JSON: no inf
