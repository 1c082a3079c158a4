"""The CUDA path: the step under AMP and channels_last, evaluation on the device, GPU checkpoints that
load on a CPU, and `raygan bench` on a Ray Train GPU worker (nccl). Skipped where there is no GPU;
run on a lent GPU machine with `pytest tests/test_cuda.py`."""

import pytest
import torch

from raygan.checkpoint import load_generator, write_checkpoint
from raygan.metrics.evaluator import Evaluator
from tests.test_step import make, params, run_steps, tiny

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

AMP = [
    ["train.amp=null", "train.channels_last=false"],
    ["train.amp=bf16"],
    ["train.amp=fp16", "train.augment=[translation, cutout]", "model.conditional=true", "train.ema=0.9"],
    ["train.amp=fp16", "loss.name=wgan-gp", "model.d_norm=layer", "train.n_critic=2"],
]


@pytest.mark.parametrize("overrides", AMP, ids=[" ".join(v) for v in AMP])
def test_step_trains_and_evaluates_on_cuda(overrides, tmp_path):
    cfg = tiny("scaling.use_gpu=true", "eval.num_samples=200", *overrides)
    engine, dataset = make(cfg, "cuda")
    before = params(engine).clone()
    run_steps(engine, dataset, cfg, 5)
    metrics = engine.pop_metrics()
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k.endswith("_loss")), metrics
    assert not torch.equal(before, params(engine))
    engine.recalibrate_sampler()
    scores = Evaluator(cfg, dataset.channels, dataset.num_classes, 0, 1, str(tmp_path / "cache"), "cuda")(engine)
    assert 0 < scores["fid"] < float("inf")
    assert all(0 <= scores[k] <= 1 for k in ("precision", "recall", "coverage")) and scores["density"] >= 0
    write_checkpoint(tmp_path / "checkpoint", engine, cfg, {"step": engine.step})
    G, _, _ = load_generator(str(tmp_path / "checkpoint"))  # a GPU run's checkpoint samples on a laptop
    labels = torch.arange(4) if cfg.model.conditional else None
    assert torch.isfinite(G(torch.randn(4, cfg.model.latent_dim), labels)).all()


def test_cuda_fp32_follows_the_cpu():
    """Same seed, same batches: losses after 5 steps agree to TF32's precision."""
    cfg_cpu = tiny()
    cfg_gpu = tiny("scaling.use_gpu=true", "train.amp=null")
    cpu, dataset = make(cfg_cpu)
    gpu, _ = make(cfg_gpu, "cuda")
    run_steps(cpu, dataset, cfg_cpu, 5)
    run_steps(gpu, dataset, cfg_gpu, 5)
    a, b = cpu.pop_metrics(), gpu.pop_metrics()
    for key in ("d_loss", "g_loss"):
        assert a[key] == pytest.approx(b[key], rel=0.02), key


def test_bench_runs_on_a_ray_train_gpu_worker(tmp_path):
    import ray

    from raygan.train.bench import bench

    cfg = tiny("scaling.use_gpu=true", "train.amp=bf16", "scaling.cpus_per_worker=2")
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False)
    try:
        result = bench(cfg, 10, str(tmp_path), name="gpu")
    finally:
        ray.shutdown()
    assert result["workers"] == 1 and result["images_per_s"] > 0
