"""Checkpoint folders: what is written loads back, a manifest marks them complete, runs pick their best."""

import json

import pytest
import torch

from raygan.checkpoint import (
    GENERATOR,
    MANIFEST,
    best_checkpoint,
    checkpoint_name,
    find_runs,
    is_complete,
    list_checkpoints,
    load_generator,
    pull,
    read_config,
    read_meta,
    resolve_checkpoint,
    upload_order,
    write_checkpoint,
)
from raygan.config import build_config
from raygan.errors import UserError
from raygan.train.step import GANEngine

TINY = {
    "data": {"image_size": 16},
    "model": {"g_layers": 3, "d_layers": 3, "g_width": 8, "d_width": 8, "latent_dim": 16},
    "train": {"batch_size": 16},
}


@pytest.fixture(scope="module")
def cfg_and_engine():
    cfg = build_config(TINY)
    return cfg, GANEngine(cfg, channels=1, num_classes=10)


def write_run(run, cfg, engine, fids):
    """A run folder with a checkpoint per {step: fid} (None: taken without an evaluation)."""
    for step, fid in fids.items():
        engine.step = step
        write_checkpoint(run / checkpoint_name(step), engine, cfg, {"step": step, "fid": fid})
    (run / "metrics.jsonl").write_text("")  # what marks a folder as a run
    return run


def test_a_written_checkpoint_loads_back_as_it_was(tmp_path, cfg_and_engine):
    cfg, engine = cfg_and_engine
    engine.step = 7
    folder = write_checkpoint(tmp_path / checkpoint_name(7), engine, cfg, {"fid": 12.5, "d_loss": 0.5})
    assert is_complete(str(folder))
    assert read_config(str(folder)) == cfg
    assert read_meta(str(folder)) == {"step": 7, "channels": 1, "num_classes": 10, "fid": 12.5, "d_loss": 0.5}
    G, loaded_cfg, meta = load_generator(str(folder))
    assert loaded_cfg == cfg and meta["checkpoint"] == str(folder) and not G.training
    for name, tensor in engine.sampler.state_dict().items():
        assert torch.equal(G.state_dict()[name], tensor), name


def test_the_manifest_goes_up_last_and_a_short_file_makes_the_checkpoint_incomplete(tmp_path, cfg_and_engine):
    cfg, engine = cfg_and_engine
    folder = write_checkpoint(tmp_path / checkpoint_name(1), engine, cfg, {})
    order = [p.name for p in upload_order(folder)]
    assert order[-1] == MANIFEST and set(order) == set(json.loads((folder / MANIFEST).read_text())) | {MANIFEST}
    weights = (folder / GENERATOR).read_bytes()
    (folder / GENERATOR).write_bytes(weights[: len(weights) // 2])  # an upload cut short
    assert not is_complete(str(folder))
    with pytest.raises(UserError, match="incomplete checkpoint"):
        resolve_checkpoint(str(folder))
    (folder / MANIFEST).unlink()
    assert not is_complete(str(folder))


def test_the_best_checkpoint_is_the_lowest_scored_one(tmp_path, cfg_and_engine):
    cfg, engine = cfg_and_engine
    run = write_run(tmp_path / "run", cfg, engine, {5: None, 10: 30.0, 15: 25.0, 20: None})
    assert [c.rsplit("/", 1)[-1] for c in list_checkpoints(run)] == [checkpoint_name(s) for s in (5, 10, 15, 20)]
    assert best_checkpoint(run).endswith(checkpoint_name(15))  # unscored checkpoints are never the best
    assert resolve_checkpoint(str(run)) == best_checkpoint(run)
    unscored = write_run(tmp_path / "unscored", cfg, engine, {5: None, 10: None})
    assert best_checkpoint(unscored).endswith(checkpoint_name(10))  # none scored: the latest


def test_an_incomplete_checkpoint_is_never_chosen(tmp_path, cfg_and_engine):
    cfg, engine = cfg_and_engine
    run = write_run(tmp_path / "run", cfg, engine, {10: 30.0, 20: 10.0})
    (run / checkpoint_name(20) / MANIFEST).unlink()
    assert best_checkpoint(run).endswith(checkpoint_name(10))
    assert len(list_checkpoints(run, complete_only=False)) == 2


def test_a_run_resumes_from_its_newest_complete_checkpoint_even_one_ray_never_registered(tmp_path, cfg_and_engine):
    """Rank 0 uploads a checkpoint before the report that registers it with Ray: a node lost in between
    leaves a complete checkpoint newer than Ray's latest. The rerun continues from it, never from a
    half-written one."""
    import ray.train

    from raygan.train.ray_train import newer_checkpoint

    cfg, engine = cfg_and_engine
    run = write_run(tmp_path / "run", cfg, engine, {100: 30.0, 150: None, 200: None})
    (run / checkpoint_name(200) / MANIFEST).unlink()  # the node was lost during this upload
    assert newer_checkpoint(ray.train.Checkpoint(str(run / checkpoint_name(100))), str(run)) == checkpoint_name(150)
    assert newer_checkpoint(None, str(run)) == checkpoint_name(150)  # Ray's bookkeeping lost altogether
    assert newer_checkpoint(ray.train.Checkpoint(str(run / checkpoint_name(150))), str(run)) is None
    assert newer_checkpoint(None, str(tmp_path / "new-run")) is None


def test_runs_are_found_under_an_experiment_but_not_inside_checkpoints(tmp_path, cfg_and_engine):
    cfg, engine = cfg_and_engine
    write_run(tmp_path / "sweep" / "runs" / "b", cfg, engine, {1: None})
    write_run(tmp_path / "sweep" / "runs" / "a", cfg, engine, {1: None})
    (tmp_path / "sweep" / "trial_0" / "metrics.jsonl").parent.mkdir(parents=True)  # Tune's, not a run
    (tmp_path / "sweep" / "trial_0" / "metrics.jsonl").write_text("")
    assert find_runs(str(tmp_path / "sweep")) == [str(tmp_path / "sweep" / "runs" / n) for n in ("a", "b")]


def test_what_is_not_a_checkpoint_is_bad_input(tmp_path):
    with pytest.raises(UserError, match="no such checkpoint or run"):
        resolve_checkpoint(str(tmp_path / "nowhere"))
    (tmp_path / "empty-run" / "notes").mkdir(parents=True)
    with pytest.raises(UserError, match="neither a checkpoint nor a run"):
        resolve_checkpoint(str(tmp_path / "empty-run"))


def test_pull_lands_in_dest_under_the_checkpoints_own_name(tmp_path, cfg_and_engine):
    """DEST/<checkpoint name>, also for a path that ends in `..` (its basename would put it beside DEST)."""
    cfg, engine = cfg_and_engine
    engine.step = 7
    folder = write_checkpoint(tmp_path / "run" / checkpoint_name(7), engine, cfg, {"fid": 1.0})
    (folder / "sub").mkdir()
    dest = tmp_path / "out" / "dest"
    target = pull(str(folder / "sub" / ".."), str(dest))
    assert target == dest / checkpoint_name(7) and is_complete(str(target))
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dest"]
