"""Adversarial losses as small pure functions of logits, and the registry `loss.name` picks from.

    LOSSES["hinge"].d(real_logits, fake_logits)   # discriminator / critic loss
    LOSSES["hinge"].g(fake_logits)                # generator loss
    LOSSES["rpgan"].g(fake_logits, real_logits)   # relativistic losses pair each fake with a real

`gan` D losses also take per-sample targets (label smoothing and flipping make them soft). R1 and R2
(`gradient_norm_penalty` on real or generated images) and LeCam (`lecam`) regularise any of them. Each
entry states the lowest value its D and G losses can take (`d_min`, `g_min`): config validation refuses a
loss threshold below it, which would never fire.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F


def d_gan(real_logits, fake_logits, real_targets=None, fake_targets=None):
    """BCE of D on real (target 1 or smoothed) plus fake (target 0)."""
    if real_targets is None:
        real_targets = torch.ones_like(real_logits)
    if fake_targets is None:
        fake_targets = torch.zeros_like(fake_logits)
    return F.binary_cross_entropy_with_logits(real_logits, real_targets) + F.binary_cross_entropy_with_logits(
        fake_logits, fake_targets
    )


def g_gan(fake_logits, real_logits=None):
    """Non-saturating generator loss: -log D(G(z))."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def d_wgan(real_logits, fake_logits):
    """Critic minimises E[C(fake)] - E[C(real)] (the negative Wasserstein estimate)."""
    return fake_logits.mean() - real_logits.mean()


def g_wgan(fake_logits, real_logits=None):
    return -fake_logits.mean()


def d_hinge(real_logits, fake_logits):
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


g_hinge = g_wgan  # the generator side of hinge is the Wasserstein one


def d_rpgan(real_logits, fake_logits):
    """Relativistic pairing GAN (Jolicoeur-Martineau 2018; R3GAN, Huang et al. 2024): D learns to score
    each real image above its paired fake, softplus(D(fake) - D(real)); no fixed target to saturate on."""
    return F.softplus(fake_logits - real_logits).mean()


def g_rpgan(fake_logits, real_logits):
    """G's side of the pairing: each fake should score above its real, softplus(D(real) - D(fake))."""
    return F.softplus(real_logits - fake_logits).mean()


def lecam(real_logits, fake_logits, ema_real, ema_fake):
    """LeCam regulariser (Tseng et al., CVPR 2021): D's scores on real images held below the moving average
    of its fake scores and vice versa, so a D that memorises a small dataset cannot drive them apart."""
    return F.relu(real_logits - ema_fake).square().mean() + F.relu(ema_real - fake_logits).square().mean()


def gradient_norm_penalty(D: Callable, images: torch.Tensor, labels=None) -> torch.Tensor:
    """E[||grad_x D(x)||^2] at the given images: R1 on real images, R2 on generated ones (Mescheder et al.
    2018; R3GAN uses both). Per sample, so D must not mix samples (no BatchNorm)."""
    images = images.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(images, labels).sum(), images, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def gradient_penalty(critic: Callable, real: torch.Tensor, fake: torch.Tensor, labels=None, alpha=None):
    """WGAN-GP: E[(||grad_x C(x)|| - 1)^2] on interpolates real * alpha + fake * (1 - alpha)."""
    if alpha is None:
        alpha = torch.rand(real.shape[0], device=real.device)
    alpha = alpha.to(real.device).view(-1, 1, 1, 1)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(mixed, labels)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def d_accuracy(real_logits, fake_logits):
    """Fraction of images D puts on the right side of 0 (real > 0, fake < 0)."""
    return 0.5 * ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean())


class AdversarialLoss(NamedTuple):
    d: Callable  # (real_logits, fake_logits[, real_targets, fake_targets]) -> scalar
    g: Callable  # (fake_logits, real_logits) -> scalar
    d_min: float  # the lowest value d takes for any logits and targets in [0, 1] (-inf: unbounded)
    g_min: float  # the same for g
    uses_targets: bool = False  # takes (soft) real/fake targets
    pairs_real: bool = False  # G's loss needs D's logits on real images too (relativistic)


# The minima are reached, not only approached, in float32: BCE and softplus are 0.0 once D is sure by
# ~104 logits (exp(-104) is below float32's smallest number), hinge's relu terms beyond the margin.
LOSSES: dict[str, AdversarialLoss] = {
    "gan": AdversarialLoss(d_gan, g_gan, d_min=0.0, g_min=0.0, uses_targets=True),  # BCE >= 0
    "wgan": AdversarialLoss(d_wgan, g_wgan, d_min=-math.inf, g_min=-math.inf),  # critic scores are unbounded
    "wgan-gp": AdversarialLoss(d_wgan, g_wgan, d_min=-math.inf, g_min=-math.inf),  # (the penalty is apart)
    "hinge": AdversarialLoss(d_hinge, g_hinge, d_min=0.0, g_min=-math.inf),  # relu >= 0; G's side is Wasserstein
    "rpgan": AdversarialLoss(d_rpgan, g_rpgan, d_min=0.0, g_min=0.0, pairs_real=True),  # softplus > 0
}


class AdversarySpec(NamedTuple):
    """One network G is trained against: its name, loss, share of G's loss and regularisers."""

    name: str  # "D" or "critic"
    loss: AdversarialLoss
    g_weight: float  # share of G's loss
    clip: float | None  # clamp weights to [-clip, clip] after each update (WGAN)
    gp_weight: float  # gradient penalty weight (WGAN-GP)
    r1_gamma: float = 0.0  # R1 penalty on real images, weight gamma / 2
    r2_gamma: float = 0.0  # R2 penalty on generated images, weight gamma / 2

    @property
    def metric(self) -> str:
        """Its metrics' prefix: every metric name is lower case (d_loss, critic_loss, g_loss, lr_d)."""
        return self.name.lower()


def adversaries(cfg) -> list[AdversarySpec]:
    """What `loss.name` trains G against (`cfg` is the config's `loss` section, raygan.config.LossConfig,
    which imports this module to validate thresholds); `combined` is a discriminator plus a clipped critic."""
    if cfg.name == "combined":
        return [
            AdversarySpec("D", LOSSES["gan"], 1.0 - cfg.combined_weight, None, 0.0, cfg.r1_gamma, cfg.r2_gamma),
            AdversarySpec("critic", LOSSES["wgan"], cfg.combined_weight, cfg.clip, 0.0),
        ]
    clip = cfg.clip if cfg.name == "wgan" else None
    gp_weight = cfg.gp_weight if cfg.name == "wgan-gp" else 0.0
    return [AdversarySpec("D", LOSSES[cfg.name], 1.0, clip, gp_weight, cfg.r1_gamma, cfg.r2_gamma)]


class LossFloors(NamedTuple):
    d: float  # the lowest loss any adversary's update compares with train.d_loss_threshold
    g: float  # the lowest G loss, compared with train.g_loss_threshold


def loss_floors(cfg) -> LossFloors:
    """The lowest batch losses the thresholds can see under `cfg` (the `loss` section): D's threshold
    applies to every adversary, so the lowest of their floors; G's loss is their weighted sum."""
    specs = adversaries(cfg)
    return LossFloors(
        d=min(spec.loss.d_min for spec in specs),
        g=sum(spec.g_weight * spec.loss.g_min for spec in specs if spec.g_weight),  # a weight 0 adds nothing
    )


def d_targets(
    n: int,
    label_smoothing: float = 0.0,
    smoothing_mode: str = "fixed",
    label_flip: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """D's targets for n real and n fake images: one-sided smoothing, then a fraction flipped."""
    if smoothing_mode == "uniform":
        real = 1.0 - label_smoothing * torch.rand(n, generator=generator)
    else:
        real = torch.full((n,), 1.0 - label_smoothing)
    fake = torch.zeros(n)
    if label_flip > 0:
        flip = torch.rand(n, generator=generator) < label_flip
        real, fake = torch.where(flip, fake, real), torch.where(flip, real, fake)
    return real, fake
