"""The sampling pictures in docs/results.md: a conditional digits GAN trained in this process (no Ray, 2,000 steps:
about 6 minutes on the 2 shared cores), then `raygan sample` on its checkpoint for class grids at three
truncations, a latent walk as a GIF, and `raygan fid`'s metrics of its samples at each truncation against digits:test.

    .venv/bin/python benchmarks/sampling_pictures.py                 # writes docs/sampling/*.png, walk.gif
    .venv/bin/python benchmarks/sampling_pictures.py --steps 300 --out /tmp/pictures --keep /tmp/ckpt
    .venv/bin/python benchmarks/sampling_pictures.py --checkpoint /tmp/ckpt/checkpoint_0000300   # no training

The GIF is what `raygan sample CKPT --grid-classes --num 6 --interpolate 4 --frames 10` writes, with the
8x8 digits drawn at their own size instead of at 32x32 (216 KB instead of 2.6 MB; docs/results.md scales it).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

CONFIG = {  # digits_cgan's model at the digits' native 8x8 (3-layer nets, as digits_fid): minutes, not 12
    "data": {"name": "digits", "image_size": 8},
    "model": {"latent_dim": 64, "g_layers": 3, "d_layers": 3, "g_width": 64, "d_width": 64, "conditional": True},
    "optim": {
        "g": {"name": "adam", "lr": 4.0e-4, "betas": [0.5, 0.999]},
        "d": {"name": "adam", "lr": 2.0e-4, "betas": [0.5, 0.999]},
    },
    "train": {"batch_size": 64, "ema": 0.999, "augment": ["translation"]},
}
TRUNCATIONS = (1.0, 0.7, 0.4)
COLUMNS = 6  # latents per class row
SEED = 1
LATENT_DIM = CONFIG["model"]["latent_dim"]
METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")


def train(steps: int, folder: Path) -> Path:
    from raygan.checkpoint import checkpoint_name, write_checkpoint
    from raygan.config import build_config
    from raygan.data import indexed_batches, load_dataset
    from raygan.train.step import GANEngine

    cfg = build_config({**CONFIG, "train": {**CONFIG["train"], "steps": steps}})
    dataset = load_dataset(cfg.data)
    engine = GANEngine(cfg, dataset.channels, dataset.num_classes)
    batches = indexed_batches(dataset, cfg.train.batch_size, cfg.seed)
    start = time.perf_counter()
    while engine.step < steps:
        engine.train_step([batches(engine.step)])
        if engine.step % 250 == 0:
            print(f"step {engine.step}/{steps}  {time.perf_counter() - start:.0f} s", flush=True)
    engine.recalibrate_sampler()  # as training does before every checkpoint
    return write_checkpoint(folder / checkpoint_name(steps), engine, cfg, {})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", default="docs/sampling")
    parser.add_argument("--keep", help="write the checkpoint here (default: a temporary folder)")
    parser.add_argument("--checkpoint", help="draw from this checkpoint instead of training one")
    args = parser.parse_args()

    import torch

    from raygan.checkpoint import load_generator, read_config, resolve_checkpoint
    from raygan.cli import main as raygan
    from raygan.compare import image_metrics, load_images
    from raygan.images import generate
    from raygan.metrics.evaluator import fixed_latents
    from raygan.sampling import draw_latents, write_walk

    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = args.checkpoint or str(train(args.steps, Path(args.keep or scratch)))
        for psi in TRUNCATIONS:
            name = out / f"classes_psi{psi:g}".replace(".", "")
            raygan(
                [
                    "sample",
                    checkpoint,
                    "--grid-classes",
                    "--num",
                    str(COLUMNS),
                    "--seed",
                    str(SEED),
                    "--truncation",
                    str(psi),
                    "--out",
                    str(name),
                ]
            )
            name.with_suffix(".npz").unlink()  # docs/results.md shows the grid only
        G, _, meta = load_generator(checkpoint)
        keyframes = draw_latents(COLUMNS, LATENT_DIM, SEED, keyframes=4)
        walk = write_walk(
            G, keyframes, out / "walk.gif", meta["num_classes"], grid_classes=True, frames_per_segment=10, min_side=8
        )
        print(f"wrote {out / 'walk.gif'} ({walk['frames']} frames of {walk['width']}x{walk['height']})")
        real, _ = load_images("digits:test", None, CONFIG["data"]["image_size"])
        z, labels = fixed_latents(read_config(resolve_checkpoint(checkpoint)), meta["num_classes"], 2000)
        for psi in TRUNCATIONS:  # what `raygan fid --real digits:test --fake CKPT` measures, with z times psi
            scores = image_metrics(real, generate(G, z * psi, labels))
            print(json.dumps({"truncation": psi, **{k: round(scores[k], 3) for k in METRICS}}))
    for path in sorted(out.iterdir()):
        print(f"{path}: {path.stat().st_size / 1000:.0f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
