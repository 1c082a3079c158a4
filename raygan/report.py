"""Pictures of a run: image grids (more in later issues: curves, GIFs, index.html)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch


def grid_array(images: torch.Tensor, nrow: Optional[int] = None, padding: int = 2) -> np.ndarray:
    """N x C x H x W floats in [-1, 1] -> one H' x W' x 3 uint8 grid, `nrow` images per row."""
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


def save_grid(images: torch.Tensor, path: Path, nrow: Optional[int] = None) -> Path:
    from PIL import Image

    Image.fromarray(grid_array(images, nrow)).save(path)
    return path
