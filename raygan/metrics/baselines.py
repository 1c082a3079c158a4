"""Reference image sets that a generator should beat, and that a feature network must rank correctly.

    blurred = blur(images, 16)                  # down to 16x16 and back: real images at half resolution
    shuffled = shuffle_patches(images, 4, g)    # each image cut into a 4x4 grid of patches, reordered
    blobs = colour_blobs(images, g)             # soft blobs in each image's own colours on its background

All take and return N x C x H x W images in [-1, 1]. The emoji recipe's target is an FID below the blur
baseline (`blur(train, 16)` against emoji:test): a generator must draw sharper than real emoji at half
resolution. `colour_blobs` is what a GAN that learnt the palette but not the shapes draws.
"""

from __future__ import annotations

import torch

from raygan.data import resize


def blur(images: torch.Tensor, size: int) -> torch.Tensor:
    """Down to `size` x `size` (antialiased) and back up (bilinear)."""
    return resize(resize(images, size), images.shape[-1]).clamp(-1, 1)


def shuffle_patches(images: torch.Tensor, grid: int, generator: torch.Generator) -> torch.Tensor:
    """Each image cut into grid x grid patches, put back in a random order of its own."""
    n, c, h, w = images.shape
    ph, pw = h // grid, w // grid
    patches = images.reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, ph, pw)
    order = torch.stack([torch.randperm(grid * grid, generator=generator) for _ in range(n)])
    patches = patches[torch.arange(n)[:, None], order]
    return patches.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def colour_blobs(images: torch.Tensor, generator: torch.Generator, blobs: int = 3) -> torch.Tensor:
    """For each image, `blobs` soft-edged discs whose colours are drawn from that image's own
    foreground pixels (those unlike its corner), laid over its corner colour."""
    n, c, h, w = images.shape
    background = images[:, :, 0, 0]
    flat = images.flatten(2)  # n x c x hw
    foreground = (flat - background[:, :, None]).abs().amax(1) > 0.1  # n x hw
    weights = foreground.float() + 1e-6  # an empty image falls back to any pixel
    picks = torch.multinomial(weights, blobs, replacement=True, generator=generator)  # n x blobs
    colours = flat.gather(2, picks[:, None, :].expand(n, c, blobs))  # n x c x blobs
    centres = (0.25 + 0.5 * torch.rand(n, blobs, 2, generator=generator)) * torch.tensor([h, w])
    radii = (0.15 + 0.2 * torch.rand(n, blobs, generator=generator)) * h
    ys, xs = torch.arange(h).float(), torch.arange(w).float()
    d2 = (ys[None, None, :, None] - centres[..., 0, None, None]) ** 2 + (
        xs[None, None, None, :] - centres[..., 1, None, None]
    ) ** 2
    alpha = torch.sigmoid((radii[..., None, None] - d2.sqrt()) / (0.05 * h))  # n x blobs x h x w: soft-edged discs
    out = background[:, :, None, None].expand(n, c, h, w).clone()
    for b in range(blobs):  # each blob painted over the ones before
        a = alpha[:, b, None]
        out = out * (1 - a) + colours[:, :, b, None, None] * a
    return out
