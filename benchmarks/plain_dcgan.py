"""The peer a user would write instead of raygan: pytorch/examples' DCGAN as a plain script, at 32x32.

    python benchmarks/plain_dcgan.py --minutes 26 --threads 2 --out plain.npz
    python benchmarks/emoji_quality.py plain.npz      # the same FID, floor and blur baselines as a run

The textbook recipe as its authors ship it (pytorch/examples dcgan/main.py), one up-block fewer for 32x32:
latent 100, widths 64, BatchNorm, BCE, Adam 2e-4 with beta1 0.5, batch 64, weights from N(0, 0.02), no EMA,
no augmentation, the last weights sampled. Only the data comes through raygan (the built-in emoji's
training split, 32x32 on white), so both see the same images. Trains until --minutes have passed, then
writes --samples images (uint8, N x 3 x 32 x 32) to an .npz.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
LATENT, WIDTH, BATCH = 100, 64, 64


def generator() -> nn.Module:
    def up(c_in, c_out, first=False):
        conv = nn.ConvTranspose2d(c_in, c_out, 4, 1 if first else 2, 0 if first else 1, bias=False)
        return [conv, nn.BatchNorm2d(c_out), nn.ReLU(True)]

    return nn.Sequential(
        *up(LATENT, WIDTH * 4, first=True),
        *up(WIDTH * 4, WIDTH * 2),
        *up(WIDTH * 2, WIDTH),
        nn.ConvTranspose2d(WIDTH, 3, 4, 2, 1, bias=False),
        nn.Tanh(),
    )


def discriminator() -> nn.Module:
    def down(c_in, c_out, norm=True):
        return [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), *([nn.BatchNorm2d(c_out)] if norm else [])] + [
            nn.LeakyReLU(0.2, inplace=True)
        ]

    return nn.Sequential(
        *down(3, WIDTH, norm=False),
        *down(WIDTH, WIDTH * 2),
        *down(WIDTH * 2, WIDTH * 4),
        nn.Conv2d(WIDTH * 4, 1, 4, 1, 0, bias=False),
        nn.Flatten(),
        nn.Sigmoid(),
    )


def weights_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=26.0, help="training time (raygan's emoji budget: 26)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the samples' .npz")
    args = parser.parse_args()

    from raygan.data import emoji

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = emoji("train", 32).images  # [-1, 1], 3,028 x 3 x 32 x 32
    G, D = generator(), discriminator()
    G.apply(weights_init)
    D.apply(weights_init)
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCELoss()
    deadline, step = time.monotonic() + args.minutes * 60, 0
    while time.monotonic() < deadline:
        for idx in torch.randperm(len(data)).split(BATCH):  # an epoch, as the DataLoader shuffles it
            real = data[idx]
            fake = G(torch.randn(len(real), LATENT, 1, 1))
            opt_D.zero_grad()
            loss_D = bce(D(real).view(-1), torch.ones(len(real))) + bce(
                D(fake.detach()).view(-1), torch.zeros(len(real))
            )
            loss_D.backward()
            opt_D.step()
            opt_G.zero_grad()
            loss_G = bce(D(fake).view(-1), torch.ones(len(real)))
            loss_G.backward()
            opt_G.step()
            step += 1
            if step % 500 == 0:
                print(f"step {step}  loss_D {loss_D.item():.3f}  loss_G {loss_G.item():.3f}", flush=True)
            if time.monotonic() >= deadline:
                break
    G.eval()
    with torch.no_grad():
        images = torch.cat([G(torch.randn(500, LATENT, 1, 1)) for _ in range(-(-args.samples // 500))])
    images = ((images[: args.samples] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    np.savez_compressed(args.out, images=images, labels=np.zeros(len(images), dtype=np.int64))
    print(f"{step} steps ({step * BATCH:,} images) in {args.minutes} min; {len(images)} samples in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
