"""DCGAN generator and discriminator (critic), sized by layer counts.

Layer counts, for an image of `size` pixels (the pytorch/examples DCGAN is size 64 with 5 and 5):
- G with L layers projects z to a (size / 2**(L-1))-pixel square, then doubles it L-1 times;
  the last layer outputs the image through tanh. 32x32: 2..4 layers, 64x64: 2..5, 128x128: 2..6.
- D with L layers halves the image L-1 times with stride-2 4x4 convs, then one conv whose kernel
  covers the remaining (size / 2**(L-1))-pixel square gives the logit. Same ranges as G.
- Widths: G's last hidden layer has `g_width` channels, doubling towards z; D's first layer has
  `d_width`, doubling with depth. No norm on D's first layer (as in DCGAN).

Conditional models: G concatenates a label embedding to z; D adds a projection term
<embed(y), mean-pooled features> to its logit (Miyato & Koyama, 2018).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

PROJECTION_INIT_STD = 0.3  # measured on the digits at 16x16, see Discriminator


def activation_layer(name: str, inplace: bool = True) -> nn.Module:
    return nn.ReLU(inplace) if name == "relu" else nn.LeakyReLU(0.2, inplace)


def init_dcgan_weights(module: nn.Module) -> None:
    """N(0, 0.02) convs, N(1, 0.02) norm scales: the DCGAN paper's initialisation."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def init_label_embedding(num_classes: int, latent_dim: int) -> nn.Embedding | None:
    """G's label embedding, concatenated to z; None when unconditional."""
    if not num_classes:
        return None
    embedding = nn.Embedding(num_classes, latent_dim)
    nn.init.zeros_(embedding.weight)  # starts unconditional: a N(0, 1) start taught G to ignore z
    return embedding


class Generator(nn.Module):
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
        start = image_size // 2 ** (layers - 1)
        self.label_embedding = init_label_embedding(num_classes, latent_dim)
        in_channels = latent_dim * (2 if num_classes else 1)
        blocks: list[nn.Module] = []
        for i in range(layers - 1):
            out_channels = width * 2 ** (layers - 2 - i)
            if i == 0:  # z (1x1) -> start x start
                blocks.append(nn.ConvTranspose2d(in_channels, out_channels, start, 1, 0, bias=False))
            else:
                blocks.append(nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=False))
            if norm == "batch":
                blocks.append(nn.BatchNorm2d(out_channels, momentum=bn_momentum))
            blocks.append(activation_layer(activation))
            in_channels = out_channels
        blocks.append(nn.ConvTranspose2d(in_channels, channels, 4, 2, 1, bias=False))
        blocks.append(nn.Tanh())
        self.main = nn.Sequential(*blocks)
        self.apply(init_dcgan_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)
        return self.main(z[:, :, None, None])


class Discriminator(nn.Module):
    """Returns one raw logit (or critic score) per image."""

    def __init__(
        self,
        image_size: int,
        channels: int,
        layers: int = 4,
        width: int = 64,
        activation: str = "leaky_relu",
        norm: str = "batch",
        dropout: float = 0.0,
        bn_momentum: float = 0.1,
        num_classes: int = 0,
    ):
        super().__init__()
        wrap = spectral_norm if norm == "spectral" else (lambda m: m)
        blocks: list[nn.Module] = []
        in_channels = channels
        for i in range(layers - 1):
            out_channels = width * 2**i
            blocks.append(wrap(nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=norm in ("none", "spectral"))))
            if i > 0 and norm == "batch":
                blocks.append(nn.BatchNorm2d(out_channels, momentum=bn_momentum))
            elif i > 0 and norm == "layer":
                blocks.append(nn.GroupNorm(1, out_channels))  # LayerNorm over C, H, W with per-channel affine
            blocks.append(activation_layer(activation))
            if dropout > 0:
                blocks.append(nn.Dropout(dropout))
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        last = image_size // 2 ** (layers - 1)
        self.head = wrap(nn.Conv2d(in_channels, 1, last, 1, 0, bias=False))
        self.label_projection = nn.Embedding(num_classes, in_channels) if num_classes else None
        self.apply(init_dcgan_weights)
        if self.label_projection is not None:  # 0.02 left labels unlearnt, 1.0 collapsed G onto one image per label
            nn.init.normal_(self.label_projection.weight, 0.0, PROJECTION_INIT_STD)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(images)
        logits = self.head(h).flatten()
        if self.label_projection is not None:
            logits = logits + (self.label_projection(labels) * h.mean(dim=(2, 3))).sum(dim=1)
        return logits
