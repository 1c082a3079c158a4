"""Each health rule fires on a constructed case and stays quiet on a healthy one; stops end the loop."""

import math

import pytest
import torch

from raygan.config import HEALTH_CONDITIONS, HealthConfig, build_config
from raygan.data import indexed_batches, load_dataset
from raygan.metrics.evaluator import Evaluator
from raygan.metrics.fid import mode_statistics
from raygan.metrics.health import HealthMonitor
from raygan.train.loop import train_loop
from raygan.train.step import GANEngine

HEALTHY_LOSSES = {"d_loss": 1.1, "d_accuracy": 0.7, "g_loss": 1.5}


class FakeEngine:
    """Stands in for a trained generator: `generate` returns chosen images."""

    def __init__(self, images):
        self.images = images

    def generate(self, z, labels=None):
        return self.images[torch.arange(len(z)) % len(self.images)]


def evaluate_images(images, tmp_path):
    cfg = build_config({"eval": {"num_samples": 600}})
    evaluator = Evaluator(cfg, channels=1, num_classes=10, rank=0, world_size=1, storage_root=str(tmp_path))
    return evaluator(FakeEngine(images))


def test_a_generator_that_emits_one_image_is_mode_collapse(tmp_path):
    digits = load_dataset(build_config({}).data).images
    metrics = evaluate_images(digits[:1], tmp_path)
    assert metrics["modes_covered"] == 1 and metrics["diversity"] < 0.01
    monitor = HealthMonitor(HealthConfig())
    flags = monitor.observe(250, {**HEALTHY_LOSSES, **metrics})
    assert flags["health_collapse"] == 1
    assert monitor.events[0]["condition"] == "collapse" and "1 of 10" in monitor.events[0]["detail"]


def test_real_images_are_healthy(tmp_path):
    digits = load_dataset(build_config({}).data, split="test").images
    metrics = evaluate_images(digits, tmp_path)
    assert metrics["modes_covered"] == 10 and metrics["mode_kl"] < 0.05 and 0.8 < metrics["diversity"] < 1.2
    monitor = HealthMonitor(HealthConfig())
    for step in range(1, 6):
        flags = monitor.observe(step * 100, {**HEALTHY_LOSSES, **metrics, "fid": 3.0 - 0.1 * step})
        assert not any(v for k, v in flags.items() if k.startswith("health_")), flags
    assert monitor.summary()["status"] == "healthy" and monitor.stop_reason is None


def test_collapse_is_judged_against_a_real_sample_of_the_same_size():
    """1,000 modes, 2,000 samples: real draws cover about 865 and sit about 0.28 (KL) off uniform. Draws
    from 820 of the modes (about 750 covered: under the old bar of all 1,000) are healthy; from half, collapse."""
    g = torch.Generator().manual_seed(0)
    real = torch.full((1000,), 60.0)

    def draws(modes):
        return torch.bincount(torch.randint(modes, (2000,), generator=g), minlength=1000)

    fair, most, half = (mode_statistics(draws(modes), real) for modes in (1000, 820, 500))
    assert fair["modes_expected"] == pytest.approx(1000 * (1 - 0.999**2000))
    assert fair["mode_kl_floor"] == pytest.approx(fair["mode_kl"], rel=0.15)  # uniform draws are real draws here
    assert most["modes_covered"] < HealthConfig().collapse_coverage * 1000
    monitor = HealthMonitor(HealthConfig())
    for step, stats in ((100, fair), (200, most)):
        assert monitor.observe(step, {**HEALTHY_LOSSES, **stats, "diversity": 1.0})["health_collapse"] == 0
    flags = monitor.observe(300, {**HEALTHY_LOSSES, **half, "diversity": 1.0})
    assert flags["health_collapse"] == 1 and "(as many real draws: 865)" in monitor.events[0]["detail"]


def test_a_winning_discriminator_is_diminished_gradient():
    monitor = HealthMonitor(HealthConfig(window=3), stop_on=("diminished_gradient",))
    winning = {"d_loss": 0.01, "d_accuracy": 1.0, "g_loss": 7.0, "fid": 50.0}
    assert monitor.observe(100, winning)["health_diminished_gradient"] == 0  # one evaluation is not a trend
    assert monitor.observe(200, winning)["health_diminished_gradient"] == 0
    assert monitor.observe(300, winning)["health_diminished_gradient"] == 1
    assert monitor.stop_reason.startswith("diminished_gradient")
    wgan = HealthMonitor(HealthConfig(window=1), d_loss_is_bounded=False)
    assert wgan.observe(100, {"d_loss": -3.0, "d_accuracy": 1.0})["health_diminished_gradient"] == 0


def test_the_monitor_flags_exactly_the_conditions_stop_on_accepts():
    flags = HealthMonitor(HealthConfig()).observe(10, {**HEALTHY_LOSSES, "fid": 5.0})
    assert sorted(k for k in flags if k.startswith("health_")) == sorted(f"health_{c}" for c in HEALTH_CONDITIONS)


def test_nan_losses():
    monitor = HealthMonitor(HealthConfig(), stop_on=("nan",))
    assert monitor.observe(10, {"d_loss": math.nan, "g_loss": 1.0})["health_nan"] == 1
    assert monitor.stop_reason == "nan: non-finite d_loss"


def test_fid_rising_past_its_best_is_non_convergence():
    monitor = HealthMonitor(HealthConfig(window=2, fid_rise=1.5))
    for step, fid in ((100, 40.0), (200, 20.0), (300, 25.0)):
        assert monitor.observe(step, {**HEALTHY_LOSSES, "fid": fid})["health_non_convergence"] == 0
    flags = monitor.observe(400, {**HEALTHY_LOSSES, "fid": 31.0})
    assert flags["health_non_convergence"] == 1 and "step 200" in monitor.events[0]["detail"]


def test_oscillating_losses_without_progress_is_non_convergence():
    monitor = HealthMonitor(HealthConfig(window=3, oscillation=0.5))
    monitor.observe(100, {**HEALTHY_LOSSES, "fid": 10.0})
    for step, g_loss in ((200, 0.5), (300, 4.0), (400, 0.4)):
        flags = monitor.observe(step, {**HEALTHY_LOSSES, "g_loss": g_loss, "fid": 12.0})
    assert flags["health_non_convergence"] == 1 and "oscillates" in monitor.events[0]["detail"]


def test_patience_and_stop_on_end_the_training_loop_with_the_reason():
    cfg = build_config(
        {
            "data": {"image_size": 16},
            "model": {"g_layers": 3, "d_layers": 3, "g_width": 8, "d_width": 8},
            "train": {"batch_size": 16, "steps": 40, "eval_every": 5, "patience": 2},
        }
    )
    dataset = load_dataset(cfg.data)
    engine = GANEngine(cfg, 1, 10)
    fids = iter([30.0, 20.0, 25.0, 26.0, 27.0, 28.0, 29.0, 30.0])
    reports = []
    monitor = HealthMonitor(cfg.health, cfg.train.stop_on, cfg.train.patience)
    train_loop(
        engine,
        indexed_batches(dataset, 16, 0),
        cfg,
        report=lambda m, c: reports.append((m, c)),
        evaluate=lambda engine: {"fid": next(fids), "kid": 0.0},
        monitor=monitor,
    )
    assert engine.step == 20  # best at 10, then 15 and 20 without a new best
    assert monitor.stop_reason.startswith("patience: no new best FID for 2 evaluations")
    final, checkpointed = reports[-1]
    assert checkpointed and final["health"]["stop_reason"] == monitor.stop_reason
    best_reports = [m["step"] for m, c in reports if c and m.get("new_best")]
    assert best_reports == [5, 10]  # every new best FID is checkpointed
