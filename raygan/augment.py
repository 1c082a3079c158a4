"""Differentiable augmentation of everything D sees (DiffAugment, Zhao et al. 2020).

    images = augment(images, ("translation", "cutout"), generator, global_batch, rows)  # real and fake, before D

On a small dataset (the built-in digits have 1,437 training images) D memorises the real images and its
accuracy reaches 0.999, leaving G little to learn from. Passing real *and* generated images through the
same kinds of random transform before D (independent draws, inside the graph so G's gradients pass
through) keeps D from memorising; G's samples are augmented only on their way into D, so G is not taught
to draw the transforms.
Draws come from `generator` (seeded per step by the engine) for the global batch; `rows` picks this
rank's slice of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TRANSLATION_FRACTION = 0.125  # shift by up to 1/8 of the image side (4 px at 32x32)
CUTOUT_FRACTION = 0.5  # erase a square half the image side
BACKGROUND = -1.0  # what shifted-in pixels show: the data's black in [-1, 1]


def translation(images: torch.Tensor, generator: torch.Generator, global_batch: int, rows: slice) -> torch.Tensor:
    """Shift each image by a random whole number of pixels in x and y, filling with the background."""
    n, _, h, w = images.shape
    r = max(1, round(h * TRANSLATION_FRACTION))  # raygan's images are square (data.image_size)
    shift = torch.randint(-r, r + 1, (global_batch, 2), generator=generator)[rows].to(images.device)
    padded = F.pad(images, (r, r, r, r), value=BACKGROUND)
    ys = (torch.arange(h, device=images.device) + r)[None, :] - shift[:, :1]  # n x h: source row of each row
    xs = (torch.arange(w, device=images.device) + r)[None, :] - shift[:, 1:]
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)


def cutout(images: torch.Tensor, generator: torch.Generator, global_batch: int, rows: slice) -> torch.Tensor:
    """Set a random square (half the side, wholly inside the image) of each image to 0, DiffAugment's fill
    (mid-grey in [-1, 1]: unlike the background, D cannot mistake it for an empty corner)."""
    _, _, h, w = images.shape
    size = max(1, round(h * CUTOUT_FRACTION))  # raygan's images are square (data.image_size)
    corner = torch.randint(0, h - size + 1, (global_batch, 2), generator=generator)[rows].to(images.device)
    ys, xs = torch.arange(h, device=images.device)[None, :], torch.arange(w, device=images.device)[None, :]
    inside_y = (ys >= corner[:, :1]) & (ys < corner[:, :1] + size)
    inside_x = (xs >= corner[:, 1:]) & (xs < corner[:, 1:] + size)
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])
    return images * keep[:, None].to(images.dtype)


AUGMENTS = {"translation": translation, "cutout": cutout}


def augment(images: torch.Tensor, names: tuple[str, ...], generator: torch.Generator, global_batch: int,
            rows: slice) -> torch.Tensor:  # fmt: skip
    """`names` applied in order; draws are made for the whole global batch so every rank agrees."""
    for name in names:
        images = AUGMENTS[name](images, generator, global_batch, rows)
    return images
