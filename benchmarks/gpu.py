"""The CUDA path: does raygan's step give the same training on a GPU (fp32, bf16, fp16 with loss
scaling, channels_last) as on the CPU, and how fast is it against a plain PyTorch loop on the same GPU?

    python benchmarks/gpu.py [--steps 300] [--out FILE.json]      # needs one CUDA device

1. Numerics: the default digits model trained `--steps` steps from the same seed on the same batches,
   once on the CPU and once per CUDA variant; prints the losses' mean gap to the CPU run over the
   first 20 steps (later, GAN dynamics amplify any rounding difference and the runs part ways) and
   the FID of each result (digits features, 2,000 samples; one seed, so read it as a sanity check).
2. Throughput: pytorch/examples' DCGAN (benchmarks/dcgan64.yaml), batch 64 and 256. `plain` is a
   hand-written loop of the same step on the GPU; `raygan` is the `raygan bench` code path (one Ray
   Train worker in an nccl process group; with one worker Ray adds no DDP wrapper). Times are synchronised
   with the device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "tune_configs" / "default.yaml"
DCGAN64 = ROOT / "benchmarks" / "dcgan64.yaml"
VARIANTS = {  # name -> config overrides on top of use_gpu
    "fp32": ["train.amp=null", "train.channels_last=false"],
    "fp32 channels_last": ["train.amp=null"],
    "bf16 channels_last": ["train.amp=bf16"],
    "fp16 channels_last": ["train.amp=fp16"],
}
TIMED_STEPS = 50


def train_digits(device: str, overrides: list[str], steps: int) -> dict:
    """`steps` steps of the default model with raygan's engine (no Ray); losses per step and FID."""
    from raygan.config import load_config
    from raygan.data import indexed_batches, load_dataset
    from raygan.metrics.evaluator import Evaluator
    from raygan.train.step import GANEngine

    gpu = ["scaling.use_gpu=true"] if device == "cuda" else ["train.amp=null"]
    cfg = load_config(DIGITS, ["eval.num_samples=2000", *gpu, *overrides])
    dataset = load_dataset(cfg.data, seed=cfg.seed)
    batches = indexed_batches(dataset, cfg.train.batch_size, cfg.seed)
    engine = GANEngine(cfg, dataset.channels, dataset.num_classes, device)
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        engine.train_step([batches(engine.step)])
        metrics = engine.pop_metrics()
        losses.append((metrics["d_loss"], metrics["g_loss"]))
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as cache:
        scores = Evaluator(cfg, dataset.channels, dataset.num_classes, 0, 1, cache, device)(engine)
    return {"losses": losses, "fid": scores["fid"], "seconds": seconds}


def numerics(steps: int) -> list[dict]:
    torch.set_num_threads(8)
    reference = train_digits("cpu", [], steps)
    rows = [
        {"variant": "cpu fp32", "fid": reference["fid"], "gap_d": 0.0, "gap_g": 0.0, "seconds": reference["seconds"]}
    ]
    early = slice(0, 20)
    for name, overrides in VARIANTS.items():
        run = train_digits("cuda", overrides, steps)
        gaps = [
            statistics.fmean(abs(a[i] - b[i]) for a, b in zip(run["losses"][early], reference["losses"][early]))
            for i in (0, 1)
        ]
        assert all(all(map(torch.isfinite, map(torch.tensor, pair))) for pair in run["losses"]), (
            f"{name}: non-finite loss"
        )
        rows.append({"variant": name, "fid": run["fid"], "gap_d": gaps[0], "gap_g": gaps[1], "seconds": run["seconds"]})
    return rows


def plain_step_s(batch: int, amp: str | None, channels_last: bool) -> float:
    """Seconds per step of a hand-written loop of raygan's step (D on real and fake, G through a frozen D)."""
    from raygan.config import load_config
    from raygan.models import build_discriminator, build_generator

    cfg = load_config(DCGAN64)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    G = build_generator(cfg, 3, 10).cuda().to(memory_format=fmt)
    D = build_discriminator(cfg, 3, 10).cuda().to(memory_format=fmt)
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = torch.nn.BCEWithLogitsLoss()
    data = torch.rand(1024, 3, 64, 64).mul(2).sub(1).contiguous(memory_format=fmt)
    ones, zeros = torch.ones(batch, device="cuda"), torch.zeros(batch, device="cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp == "bf16")

    def step() -> None:
        real = data[torch.randint(len(data), (batch,))].cuda(non_blocking=True)
        with autocast:
            fake = G(torch.randn(batch, cfg.model.latent_dim).cuda(non_blocking=True))
            loss_D = bce(D(real).float(), ones) + bce(D(fake.detach()).float(), zeros)
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()
        D.requires_grad_(False)
        with autocast:
            loss_G = bce(D(fake).float(), ones)
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        D.requires_grad_(True)
        opt_G.step()

    torch.backends.cudnn.benchmark = True
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(TIMED_STEPS):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / TIMED_STEPS


def throughput() -> list[dict]:
    import ray

    from raygan.config import load_config
    from raygan.train.bench import bench

    rows = []
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        for batch in (64, 256):
            for name, overrides in VARIANTS.items():
                if name.startswith("fp16"):
                    plain = None  # the plain loop has no loss scaler; fp16 is raygan's alone
                else:
                    plain = plain_step_s(batch, "bf16" if name.startswith("bf16") else None, "channels_last" in name)
                cfg = load_config(
                    DCGAN64,
                    [f"train.batch_size={batch}", "scaling.use_gpu=true", "scaling.cpus_per_worker=4", *overrides],
                )
                with tempfile.TemporaryDirectory() as storage:
                    result = bench(cfg, TIMED_STEPS, storage, name="gpu-bench")
                row = {
                    "batch": batch,
                    "variant": name,
                    "raygan_images_per_s": result["images_per_s"],
                    "plain_images_per_s": None if plain is None else batch / plain,
                }
                rows.append(row)
                print(_throughput_line(row), flush=True)
    finally:
        ray.shutdown()
    return rows


def _throughput_line(row: dict) -> str:
    plain = row["plain_images_per_s"]
    ratio = f"{row['raygan_images_per_s'] / plain:.2f}x plain" if plain else "(no plain fp16 loop)"
    plain_text = f"{plain:9.0f}" if plain else "        -"
    raygan = row["raygan_images_per_s"]
    return f"batch {row['batch']:4d}  {row['variant']:<20s} plain {plain_text}  raygan {raygan:9.0f} images/s  {ratio}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA device: this benchmark checks the GPU path", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    rows = numerics(args.steps)
    print(f"\nnumerics: default digits model, {args.steps} steps from seed 0")
    print("(losses: mean |gap| to the CPU run, first 20 steps)")
    for row in rows:
        print(
            f"  {row['variant']:<20s} FID {row['fid']:6.3f}  D loss gap {row['gap_d']:.3f}  "
            f"G loss gap {row['gap_g']:.3f}  {row['seconds']:.1f} s"
        )
    print("\nthroughput: dcgan64 (3.6M G / 2.8M D parameters, 64x64x3)")
    speed = throughput()
    if args.out:
        Path(args.out).write_text(json.dumps({"numerics": rows, "throughput": speed}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
