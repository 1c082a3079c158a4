"""Generator / discriminator registry: `model.arch` picks the builders by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import nn

from raygan.config import Config
from raygan.models.dcgan import Discriminator, Generator
from raygan.models.resnet import ResNetDiscriminator, ResNetGenerator


class Arch(NamedTuple):
    generator: Callable[[Config, int, int], nn.Module]  # (cfg, channels, num_classes) -> G
    discriminator: Callable[[Config, int, int], nn.Module]  # (cfg, channels, num_classes) -> D or critic


def _generator(G: type[nn.Module]) -> Callable[[Config, int, int], nn.Module]:
    """A builder for generator class G: both take the same model keys."""

    def build(cfg: Config, channels: int, num_classes: int) -> nn.Module:
        m = cfg.model
        return G(
            image_size=cfg.data.image_size,
            channels=channels,
            latent_dim=m.latent_dim,
            layers=m.g_layers,
            width=m.g_width,
            activation=m.g_activation,
            norm=m.g_norm,
            bn_momentum=m.bn_momentum,
            num_classes=num_classes if m.conditional else 0,
        )

    return build


def _discriminator(D: type[nn.Module]) -> Callable[[Config, int, int], nn.Module]:
    """A builder for discriminator class D: both take the same model keys."""

    def build(cfg: Config, channels: int, num_classes: int) -> nn.Module:
        m = cfg.model
        return D(
            image_size=cfg.data.image_size,
            channels=channels,
            layers=m.d_layers,
            width=m.d_width,
            activation=m.d_activation,
            norm=m.d_norm,
            dropout=m.d_dropout,
            bn_momentum=m.bn_momentum,
            num_classes=num_classes if m.conditional else 0,
        )

    return build


ARCHS: dict[str, Arch] = {
    "dcgan": Arch(_generator(Generator), _discriminator(Discriminator)),
    "resnet": Arch(_generator(ResNetGenerator), _discriminator(ResNetDiscriminator)),
}


def build_generator(cfg: Config, channels: int, num_classes: int) -> nn.Module:
    return ARCHS[cfg.model.arch].generator(cfg, channels, num_classes)


class Packed(nn.Module):
    """PacGAN (Lin et al., 2018): D sees `pack` consecutive samples stacked along channels and scores
    them together, which penalises a G whose samples look alike. Each sample gets its pack's logit, so
    per-sample targets, losses and accuracies need no change."""

    def __init__(self, discriminator: nn.Module, pack: int):
        super().__init__()
        self.inner, self.pack = discriminator, pack

    def forward(self, images, labels=None):
        n, c, h, w = images.shape
        return self.inner(images.reshape(n // self.pack, self.pack * c, h, w)).repeat_interleave(self.pack)


def build_discriminator(cfg: Config, channels: int, num_classes: int) -> nn.Module:
    pack = cfg.model.pack
    D = ARCHS[cfg.model.arch].discriminator(cfg, channels * pack, num_classes)
    return Packed(D, pack) if pack > 1 else D


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
