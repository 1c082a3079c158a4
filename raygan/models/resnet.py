"""Residual generator and discriminator (SNGAN-style up- and down-blocks), sized like the DCGAN ones.

G with L layers projects z to a (size / 2**(L-1))-pixel square with a linear layer, then L-2 residual
up-blocks double it: BN -> ReLU -> 2x nearest upsample -> 3x3 conv -> BN -> ReLU -> 3x3 conv, plus a
1x1-conv shortcut, upsampled. A last BN -> ReLU -> 2x upsample -> 3x3 conv -> tanh draws the image at full
size: no residual block at full size (with one, G's forward and backward took 6x the DCGAN G's on a CPU).
Widths as in DCGAN: the last block has `width` channels, doubling towards z.

D with L layers mirrors it: a 3x3 conv from the image to `width` channels, L-1 residual down-blocks
that halve it (act -> 3x3 conv -> act -> 2x2 average pool -> 3x3 conv to the wider output, plus a pooled
1x1-conv shortcut; the DownBlock with both convs at full size took 4x the time on a CPU),
widths doubling with depth, then one linear layer over the remaining (size / 2**(L-1))-pixel square, as
DCGAN's last conv. `d_norm` none or spectral suits gradient penalties (R1/R2, WGAN-GP); batch and layer
normalise after each block's convs.

Conditional G concatenates a label embedding to z, and conditional D adds a projection term, as the
DCGAN ones do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from raygan.models.dcgan import PROJECTION_INIT_STD, activation_layer, init_label_embedding


def _norm(norm: str, channels: int, bn_momentum: float) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels, momentum=bn_momentum)
    if norm == "layer":
        return nn.GroupNorm(1, channels)  # LayerNorm over C, H, W with per-channel affine, as in the DCGAN D
    return nn.Identity()


class UpBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, activation: str, norm: str, bn_momentum: float):
        super().__init__()
        self.residual = nn.Sequential(
            _norm(norm, in_channels, bn_momentum),
            activation_layer(activation, inplace=False),  # x itself when norm is none; the shortcut reads it
            nn.Upsample(scale_factor=2.0, mode="nearest"),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=norm != "batch"),
            _norm(norm, out_channels, bn_momentum),
            activation_layer(activation),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1),
        )
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a bias-free 1x1 conv commutes with nearest upsampling: convolve the small map, a quarter of the work
        return self.residual(x) + F.interpolate(self.shortcut(x), scale_factor=2.0, mode="nearest")


class ResNetGenerator(nn.Module):
    def __init__(
        self,
        image_size: int,
        channels: int,
        latent_dim: int = 100,
        layers: int = 4,
        width: int = 64,
        activation: str = "relu",
        norm: str = "batch",
        bn_momentum: float = 0.1,
        num_classes: int = 0,  # > 0: conditional on a label
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.label_embedding = init_label_embedding(num_classes, latent_dim)
        self.start = image_size // 2 ** (layers - 1)
        widths = [width * 2 ** (layers - 2 - i) for i in range(layers - 1)]  # per stage, start to last
        self.start_channels = widths[0]
        in_features = latent_dim * (2 if num_classes else 1)
        self.project = nn.Linear(in_features, self.start_channels * self.start**2)
        self.blocks = nn.Sequential(
            *(UpBlock(c_in, c_out, activation, norm, bn_momentum) for c_in, c_out in zip(widths, widths[1:]))
        )
        self.out = nn.Sequential(
            _norm(norm, width, bn_momentum),
            activation_layer(activation),
            nn.Upsample(scale_factor=2.0, mode="nearest"),
            nn.Conv2d(width, channels, 3, 1, 1),
            nn.Tanh(),
        )
        for module in self.modules():  # Xavier, as in the SNGAN code
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)
        h = self.project(z).view(-1, self.start_channels, self.start, self.start)
        return self.out(self.blocks(h))


class DownBlock(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, activation: str, norm: str, bn_momentum: float, dropout: float
    ):
        super().__init__()
        wrap = spectral_norm if norm == "spectral" else (lambda m: m)
        self.residual = nn.Sequential(  # the second conv after pooling: a quarter of its work (StyleGAN2's D)
            activation_layer(activation, inplace=False),  # the shortcut reads x itself
            wrap(nn.Conv2d(in_channels, in_channels, 3, 1, 1)),
            _norm(norm, in_channels, bn_momentum),
            activation_layer(activation),
            nn.AvgPool2d(2),
            wrap(nn.Conv2d(in_channels, out_channels, 3, 1, 1)),
            _norm(norm, out_channels, bn_momentum),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        )
        self.shortcut = wrap(nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a 1x1 conv commutes with average pooling: pool first, a quarter of the work
        return self.residual(x) + self.shortcut(F.avg_pool2d(x, 2))


class ResNetDiscriminator(nn.Module):
    """Returns one raw logit (or critic score) per image."""

    def __init__(
        self,
        image_size: int,
        channels: int,
        layers: int = 4,
        width: int = 64,
        activation: str = "leaky_relu",
        norm: str = "none",
        dropout: float = 0.0,
        bn_momentum: float = 0.1,
        num_classes: int = 0,
    ):
        super().__init__()
        wrap = spectral_norm if norm == "spectral" else (lambda m: m)
        widths = [width * 2**i for i in range(layers)]
        self.from_image = wrap(nn.Conv2d(channels, width, 3, 1, 1))
        self.blocks = nn.Sequential(
            *(DownBlock(c_in, c_out, activation, norm, bn_momentum, dropout) for c_in, c_out in zip(widths, widths[1:]))
        )
        self.act = activation_layer(activation)
        last = image_size // 2 ** (layers - 1)
        self.head = wrap(nn.Linear(widths[-1] * last * last, 1))
        self.label_projection = nn.Embedding(num_classes, widths[-1]) if num_classes else None
        if self.label_projection is not None:
            nn.init.normal_(self.label_projection.weight, 0.0, PROJECTION_INIT_STD)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act(self.blocks(self.from_image(images)))
        logits = self.head(h.flatten(1)).flatten()
        if self.label_projection is not None:
            logits = logits + (self.label_projection(labels) * h.mean(dim=(2, 3))).sum(dim=1)
        return logits
