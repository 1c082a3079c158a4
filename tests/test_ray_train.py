"""Training on real Ray Train workers with DDP (gloo on CPU)."""

from pathlib import Path

import pytest
import torch

from raygan.checkpoint import STATE, list_checkpoints, safe_load
from raygan.config import build_config
from raygan.train.ray_train import fit

pytestmark = pytest.mark.slow

NO_BATCHNORM = {
    "seed": 1,
    "data": {"image_size": 16},
    "model": {
        "g_layers": 3,
        "d_layers": 3,
        "g_width": 8,
        "d_width": 8,
        "latent_dim": 16,
        "g_norm": "none",
        "d_norm": "layer",
        "conditional": True,
    },
    "loss": {"label_smoothing": 0.1, "label_flip": 0.1},
    "train": {"batch_size": 16, "steps": 4, "checkpoint_every": 4, "report_every": 4, "ema": 0.5},
    "eval": {"num_samples": 200},  # the run's last evaluation: what is compared here is the weights
}


def final_state(tmp_path, name, tree, workers):
    cfg = build_config(tree, [f"scaling.num_workers={workers}"])
    result = fit(cfg, name, str(tmp_path))
    assert result.metrics["step"] == cfg.train.steps
    return safe_load(Path(list_checkpoints(tmp_path / name)[-1]) / STATE)


def assert_same_weights(a, b):
    for net in ("G", "D", "G_ema"):
        for key, value in a[net].items():
            torch.testing.assert_close(value, b[net][key], rtol=1e-4, atol=1e-5, msg=f"{net}.{key}")


@pytest.mark.parametrize(
    "overrides",
    [{}, {"loss": {"name": "wgan-gp"}, "train": {**NO_BATCHNORM["train"], "n_critic": 2}}],
    ids=["gan-smoothing-flip-conditional", "wgan-gp-n_critic-2"],
)
def test_two_workers_equal_one_worker_with_the_same_global_batch(ray_session, tmp_path, overrides):
    """DDP averages the two half-batch gradients: the same update as the full batch on one worker.

    BatchNorm is off here on purpose: on CPU each DDP rank normalises over its own half batch, which
    is a different (and equally valid) model; GPUs can use scaling.sync_batchnorm.
    """
    tree = {**NO_BATCHNORM, **overrides}
    one = final_state(tmp_path, "one", tree, workers=1)
    two = final_state(tmp_path, "two", tree, workers=2)
    assert one["step"] == two["step"] == 4
    assert_same_weights(one, two)


def test_resume_through_ray_equals_an_uninterrupted_run(ray_session, tmp_path):
    tree = {**NO_BATCHNORM, "train": {**NO_BATCHNORM["train"], "steps": 6, "checkpoint_every": 3}}
    straight = final_state(tmp_path, "straight", tree, workers=2)
    half = {**tree, "train": {**tree["train"], "steps": 3}}
    assert final_state(tmp_path, "resumed", half, workers=2)["step"] == 3
    resumed = final_state(tmp_path, "resumed", tree, workers=2)  # same name and storage: resumes
    assert resumed["step"] == 6
    assert_same_weights(straight, resumed)


def test_a_checkpoint_whose_report_was_cut_short_is_resumed_and_reported(ray_session, tmp_path):
    """A node lost between rank 0's upload and Ray registering it leaves a complete checkpoint that Ray does
    not know (here all of Ray's bookkeeping is gone: a run folder with just the checkpoint). The run resumes
    from it and makes its report: Ray keeps the checkpoint, and its metrics (a sweep's evaluation) are not lost."""
    from raygan.checkpoint import checkpoint_name, write_checkpoint
    from raygan.train.step import GANEngine

    cfg = build_config({**NO_BATCHNORM, "train": {**NO_BATCHNORM["train"], "steps": 5}}, ["scaling.num_workers=1"])
    engine = GANEngine(cfg, channels=1, num_classes=10)
    engine.step = 5
    meta = {"step": 5, "evaluated": True, "fid": 42.0, "best_fid": 42.0, "best_step": 5, "new_best": True}
    write_checkpoint(tmp_path / "cut" / checkpoint_name(5), engine, cfg, meta)
    result = fit(cfg, "cut", str(tmp_path))
    assert result.metrics["step"] == 5 and result.metrics["fid"] == 42.0
    assert result.checkpoint.path.endswith(checkpoint_name(5))
    assert checkpoint_name(5) in (tmp_path / "cut" / "checkpoint_manager_snapshot.json").read_text()


def test_folder_streams_through_ray_data_to_two_workers(ray_session, tmp_path):
    import numpy as np
    from PIL import Image

    images = tmp_path / "images"
    for label, name in enumerate(("circles", "squares")):
        (images / name).mkdir(parents=True)
        for i in range(24):
            pixels = np.random.default_rng(i + 100 * label).integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(images / name / f"{i}.png")
    (images / "squares" / "broken.png").write_bytes(b"not a png")
    tree = {
        "data": {"name": "folder", "path": str(images), "image_size": 16, "channels": 3},
        "model": {"g_layers": 3, "d_layers": 3, "g_width": 8, "d_width": 8, "latent_dim": 16, "conditional": True},
        "train": {"batch_size": 16, "steps": 5, "checkpoint_every": 5, "report_every": 5},
        "eval": {"num_samples": 200},
    }
    state = final_state(tmp_path, "folder", tree, workers=2)
    assert state["step"] == 5
    meta = (Path(list_checkpoints(tmp_path / "folder")[-1]) / "meta.json").read_text()
    assert '"num_classes": 2' in meta and '"channels": 3' in meta


def _fid_on_workers(config):
    import ray.train

    from raygan.metrics.fid import FeatureMetrics

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    real, fake = config["real"], config["fake"]
    metrics = FeatureMetrics(real.shape[1])
    metrics.add_real(real if rank == 0 else real[:0])
    metrics.add_fake(fake[len(fake) * rank // world : len(fake) * (rank + 1) // world])
    return metrics.compute(len(real), len(fake))


def test_distributed_fid_equals_the_single_process_value(ray_session, tmp_path):
    import ray.train
    from ray.train.torch import TorchTrainer

    from raygan.metrics.fid import FeatureMetrics

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(600, 16, generator=g), 1.2 * torch.randn(500, 16, generator=g) + 0.3
    single = FeatureMetrics(16)
    single.add_real(real)
    single.add_fake(fake)
    expected = single.compute(600, 500)
    trainer = TorchTrainer(
        _fid_on_workers,
        train_loop_config={"real": real, "fake": fake},
        scaling_config=ray.train.ScalingConfig(num_workers=2),
        run_config=ray.train.RunConfig(name="fid", storage_path=str(tmp_path)),
    )
    distributed = trainer.fit().return_value
    for key in ("fid", "kid", "mifid"):
        assert distributed[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
