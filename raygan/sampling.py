"""What `raygan sample` draws: latents (optionally truncated), class grids, and latent walks as a GIF.

    raygan sample RUN --num 64 --out samples                      # samples.png + samples.npz
    raygan sample RUN --num 64 --truncation 0.7 --out typical     # latents pulled toward the mean latent
    raygan sample RUN --num 8 --grid-classes --out classes        # conditional: a row per class, a latent per column
    raygan sample RUN --num 16 --interpolate 6 --out walk         # walk.gif: 16 slerp walks through 6 keyframes

    >>> import torch
    >>> from raygan.sampling import slerp
    >>> slerp(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 0.5)   # along the circle, norm kept
    tensor([0.7071, 0.7071])

Truncation multiplies the latents by psi: StyleGAN's `w_avg + psi * (w - w_avg)` with raygan's z ~ N(0, I)
in place of w, whose mean latent is 0. psi = 1 changes nothing, and a smaller psi pulls the same draw
toward the mean image G(0): more typical, less varied samples. (BigGAN's other form, redrawing every
component beyond a threshold, keeps no such correspondence: a new threshold changes which draws are kept.)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from raygan.images import GRID_MIN_SIDE, generate, grid_array, save_gif

GRID_CLASS_COLUMNS = 8  # default latents per class row with --grid-classes
WALKS = 16  # default walks side by side with --interpolate
FRAMES_PER_SEGMENT = 16  # default frames from one keyframe to the next: 0.8 s at FRAME_MS
FRAME_MS = 50  # 20 frames per second


def draw_latents(num: int, latent_dim: int, seed: int, truncation: float = 1.0, keyframes: int = 1) -> torch.Tensor:
    """keyframes x num x latent_dim latents from N(0, I) times `truncation`; keyframe 0 is what a still
    sample with the same seed draws."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(num, latent_dim, generator=g) for _ in range(keyframes)]) * truncation


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from `a` (t = 0) to `b` (t = 1), row by row (Shoemake 1985, for GAN latents
    White 2016). A straight line between two Gaussian latents dips toward 0, a norm the generator never
    saw in high dimensions; the arc keeps it. Rows that point the same way are interpolated linearly."""
    a_dir = a / a.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    b_dir = b / b.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    omega = torch.acos((a_dir * b_dir).sum(dim=-1, keepdim=True).clamp(-1.0, 1.0))
    sin_omega = torch.sin(omega)
    parallel = sin_omega < 1e-6  # sin(omega) ~ 0: the arc's weights are 0 / 0
    safe = torch.where(parallel, torch.ones_like(sin_omega), sin_omega)
    arc = torch.sin((1.0 - t) * omega) / safe * a + torch.sin(t * omega) / safe * b
    return torch.where(parallel, (1.0 - t) * a + t * b, arc)


def latent_walk(keyframes: torch.Tensor, frames_per_segment: int = FRAMES_PER_SEGMENT) -> torch.Tensor:
    """(K * frames_per_segment) x N x D latents through K keyframes (K x N x D) and back to the first, so
    a looping GIF has no jump; frame i * frames_per_segment is keyframe i exactly."""
    count = keyframes.shape[0]
    frames = [
        slerp(keyframes[k], keyframes[(k + 1) % count], step / frames_per_segment)
        for k in range(count)
        for step in range(frames_per_segment)
    ]
    return torch.stack(frames)


def class_rows(z: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents, labels) for a grid with a row per class whose columns share a latent, so that a column
    shows what the label alone changes."""
    return z.repeat(num_classes, 1), torch.arange(num_classes).repeat_interleave(z.shape[0])


def tiles(
    z: torch.Tensor, num_classes: int = 0, label: int | None = None, grid_classes: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """(latents, a label per image or None, images per grid row or None for a square) of the grid drawn
    from `z`; num_classes 0 is an unconditional model. Conditional without a label: classes in turn,
    so a grid with a column per class; with `grid_classes`, a row per class (see class_rows)."""
    if not num_classes:
        return z, None, None
    if grid_classes:
        return (*class_rows(z, num_classes), z.shape[0])
    if label is not None:
        return z, torch.full((z.shape[0],), label), None
    return z, torch.arange(z.shape[0]) % num_classes, num_classes


def still_inputs(
    num: int,
    latent_dim: int,
    seed: int,
    truncation: float = 1.0,
    num_classes: int = 0,
    label: int | None = None,
    grid_classes: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """`tiles` of the latents `raygan sample --seed` draws: what `raygan sample` and `raygan serve` feed G,
    so that both draw the same images for the same seed."""
    return tiles(draw_latents(num, latent_dim, seed, truncation)[0], num_classes, label, grid_classes)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] as the uint8 N x C x H x W array that the .npz holds."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def save_npz(target, images: torch.Tensor, labels: torch.Tensor | None) -> None:
    """`images` (uint8) and `labels` (-1 each for an unconditional model), as `raygan sample` writes them;
    `target` a path or a binary file."""
    label_array = labels.numpy() if labels is not None else np.full(len(images), -1)
    np.savez_compressed(target, images=to_uint8(images), labels=label_array)


def write_walk(
    G: nn.Module,
    keyframes: torch.Tensor,
    path,
    num_classes: int = 0,
    label: int | None = None,
    grid_classes: bool = False,
    frames_per_segment: int = FRAMES_PER_SEGMENT,
    min_side: int = GRID_MIN_SIDE,
) -> dict:
    """An animated GIF of the grid `tiles` lays out, each image's latent walking through its keyframes
    (K x N x D) while its label stays; {"frames", "width", "height"}. Images smaller than `min_side`
    are drawn upsampled, as in the still grids (GIF bytes grow with the pixels: ~1 byte each here)."""
    from PIL import Image

    frames = []
    for z in latent_walk(keyframes, frames_per_segment):
        z, labels, nrow = tiles(z, num_classes, label, grid_classes)
        frames.append(Image.fromarray(grid_array(generate(G, z, labels), nrow, min_side=min_side)))
    save_gif(frames, path, [FRAME_MS] * len(frames))
    return {"frames": len(frames), "width": frames[0].width, "height": frames[0].height}
