"""Images from a generator and pictures of them, shared by training, metrics, the commands and reports.

    images = generate(G, torch.randn(64, G.latent_dim))   # 64 x C x H x W in [-1, 1], G in eval mode
    save_grid(images, Path("samples.png"), nrow=8)          # one PNG, small images drawn at 32 pixels
    png = png_bytes(grid_array(images, nrow=8))             # the same grid as PNG bytes, for storage

Nothing here knows about runs, checkpoints or Ray: everything above may use it.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from raygan.data import resize

GRID_MIN_SIDE = 32  # smaller images are drawn upsampled, bilinearly as raygan upsamples the 8x8 digits


@torch.no_grad()
def generate(G: nn.Module, z: torch.Tensor, labels=None, batch_size: int = 500, device="cpu") -> torch.Tensor:
    """Images in [-1, 1] on the CPU from G in eval mode (BatchNorm uses running statistics), in batches."""
    was_training = G.training
    G.eval()
    out = []
    for start in range(0, z.shape[0], batch_size):
        zb = z[start : start + batch_size].to(device)
        lb = None if labels is None else labels[start : start + batch_size].to(device)
        out.append(G(zb, lb).float().cpu())
    G.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def grid_array(
    images: torch.Tensor, nrow: int | None = None, padding: int = 2, min_side: int = GRID_MIN_SIDE
) -> np.ndarray:
    """N x C x H x W floats in [-1, 1] -> one H' x W' x 3 uint8 grid, `nrow` images per row."""
    if images.shape[-1] < min_side:
        images = resize(images.detach().float(), min_side)
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if c == 1:
        pixels = pixels.expand(n, 3, h, w)
    canvas = torch.full((3, rows * (h + padding) + padding, nrow * (w + padding) + padding), 255, dtype=torch.uint8)
    for i in range(n):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        canvas[:, top : top + h, left : left + w] = pixels[i]
    return canvas.permute(1, 2, 0).numpy()


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None) -> Path:
    from PIL import Image

    Image.fromarray(grid_array(images, nrow)).save(path)
    return path


def png_bytes(grid: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    return buffer.getvalue()


def save_gif(frames: list, path: Path, durations: list[int]) -> Path:
    """PIL images as one looping GIF (Pillow's writer), each shown for its duration in milliseconds;
    `path` a file name or a binary file."""
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path
