"""Generator / discriminator registry: `model.arch` picks the builders by name."""

from __future__ import annotations

from typing import Callable, NamedTuple

from torch import nn

from raygan.config import Config
from raygan.models.dcgan import Discriminator, Generator


class Arch(NamedTuple):
    generator: Callable[[Config, int, int], nn.Module]  # (cfg, channels, num_classes) -> G
    discriminator: Callable[[Config, int, int], nn.Module]  # (cfg, channels, num_classes) -> D or critic


def _dcgan_generator(cfg: Config, channels: int, num_classes: int) -> Generator:
    m = cfg.model
    return Generator(
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


def _dcgan_discriminator(cfg: Config, channels: int, num_classes: int) -> Discriminator:
    m = cfg.model
    return Discriminator(
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


ARCHS: dict[str, Arch] = {"dcgan": Arch(_dcgan_generator, _dcgan_discriminator)}


def build_generator(cfg: Config, channels: int, num_classes: int) -> nn.Module:
    return ARCHS[cfg.model.arch].generator(cfg, channels, num_classes)


def build_discriminator(cfg: Config, channels: int, num_classes: int) -> nn.Module:
    return ARCHS[cfg.model.arch].discriminator(cfg, channels, num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
