"""Differentiable augmentation of everything D sees (DiffAugment, Zhao et al. 2020; ADA, Karras et al. 2020).

    images = augment(images, ("translation", "cutout"), generator, global_batch, rows)  # real and fake, before D
    images = augment(images, ("color", "translation"), generator, global_batch, rows, p=0.3)  # each with prob. p

On a small dataset (the built-in digits have 1,437 training images) D memorises the real images and its
accuracy reaches 0.999, leaving G little to learn from. Passing real *and* generated images through the
same kinds of random transform before D (independent draws, inside the graph so G's gradients pass
through) keeps D from memorising; G's samples are augmented only on their way into D, so G is not taught
to draw the transforms as long as each transform is applied with probability p < 0.8 or always (ADA's
finding: below that, D can still tell which images were not transformed). `p` is DiffAugment's 1 by
default; the engine adapts it to D's overfitting when `train.ada_target` is set.
Draws come from `generator` (seeded per step by the engine) for the global batch; `rows` picks this
rank's slice of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TRANSLATION_FRACTION = 0.125  # shift by up to 1/8 of the image side (4 px at 32x32)
CUTOUT_FRACTION = 0.5  # erase a square half the image side


def translation(images: torch.Tensor, generator: torch.Generator, global_batch: int, rows: slice) -> torch.Tensor:
    """Shift each image by a random whole number of pixels in x and y; what comes in repeats the edge
    (the digits' black, the emoji's white)."""
    n, _, h, w = images.shape
    r = max(1, round(h * TRANSLATION_FRACTION))  # raygan's images are square (data.image_size)
    shift = torch.randint(-r, r + 1, (global_batch, 2), generator=generator)[rows].to(images.device)
    padded = F.pad(images, (r, r, r, r), mode="replicate")
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


def color(images: torch.Tensor, generator: torch.Generator, global_batch: int, rows: slice) -> torch.Tensor:
    """DiffAugment's colour transform on [-1, 1] images: brightness + U(-0.5, 0.5), saturation x U(0, 2)
    around each pixel's channel mean, contrast x U(0.5, 1.5) around each image's mean."""
    brightness, saturation, contrast = (
        torch.rand(3, global_batch, generator=generator)[:, rows].to(images.device, images.dtype).view(3, -1, 1, 1, 1)
    )
    images = images + (brightness - 0.5)
    pixel_mean = images.mean(dim=1, keepdim=True)
    images = pixel_mean + (images - pixel_mean) * (saturation * 2)
    image_mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return image_mean + (images - image_mean) * (contrast + 0.5)


AUGMENTS = {"translation": translation, "cutout": cutout, "color": color}


def augment(
    images: torch.Tensor,
    names: tuple[str, ...],
    generator: torch.Generator,
    global_batch: int,
    rows: slice,
    p: float = 1.0,
) -> torch.Tensor:
    """`names` applied in order, each to an image with probability `p`; draws are made for the whole
    global batch so every rank agrees."""
    for name in names:
        transformed = AUGMENTS[name](images, generator, global_batch, rows)
        if p < 1.0:
            chosen = (torch.rand(global_batch, generator=generator)[rows] < p).to(images.device)
            transformed = torch.where(chosen[:, None, None, None], transformed, images)
        images = transformed
    return images
