import math

import pytest
import torch

from raygan import losses
from raygan.config import LossConfig

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def bce(logit, target):
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_gan_losses_match_hand_computation():
    d = (bce(2.0, 1) + bce(-1.0, 1)) / 2 + (bce(0.5, 0) + bce(-3.0, 0)) / 2
    assert losses.d_gan(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    g = (bce(0.5, 1) + bce(-3.0, 1)) / 2
    assert losses.g_gan(FAKE).item() == pytest.approx(g, rel=1e-6)


def test_smoothed_targets_enter_the_bce():
    real_t, fake_t = torch.tensor([0.9, 0.9]), torch.tensor([0.0, 1.0])
    d = (bce(2.0, 0.9) + bce(-1.0, 0.9)) / 2 + (bce(0.5, 0) + bce(-3.0, 1)) / 2
    assert losses.d_gan(REAL, FAKE, real_t, fake_t).item() == pytest.approx(d, rel=1e-6)


def test_wgan_and_hinge_match_hand_computation():
    assert losses.d_wgan(REAL, FAKE).item() == pytest.approx((0.5 - 3.0) / 2 - (2.0 - 1.0) / 2)
    assert losses.g_wgan(FAKE).item() == pytest.approx(1.25)
    hinge = (max(0, 1 - 2.0) + max(0, 1 + 1.0)) / 2 + (max(0, 1 + 0.5) + max(0, 1 - 3.0)) / 2
    assert losses.d_hinge(REAL, FAKE).item() == pytest.approx(hinge)
    assert losses.g_hinge(FAKE).item() == pytest.approx(1.25)


def test_gradient_penalty_of_a_linear_critic():
    """C(x) = w.x has gradient w everywhere: penalty (|w| - 1)^2."""
    w = torch.full((1, 1, 2, 2), 1.0)  # |w| = 2

    def critic(x, labels=None):
        return (x * w).sum(dim=(1, 2, 3))

    real, fake = torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2)
    assert losses.gradient_penalty(critic, real, fake).item() == pytest.approx(1.0, rel=1e-5)


def test_d_accuracy():
    assert losses.d_accuracy(REAL, FAKE).item() == pytest.approx(0.5 * (0.5 + 0.5))


def test_targets_smoothing_and_flip():
    real, fake = losses.d_targets(1000, label_smoothing=0.1)
    assert torch.all(real == 0.9) and torch.all(fake == 0)
    real, _ = losses.d_targets(1000, 0.1, "uniform", generator=torch.Generator().manual_seed(0))
    assert real.min() >= 0.9 and real.max() <= 1.0 and real.std() > 0.01
    real, fake = losses.d_targets(10_000, 0.0, label_flip=0.05, generator=torch.Generator().manual_seed(0))
    flipped = (real == 0).float().mean().item()
    assert 0.04 < flipped < 0.06 and torch.equal(real + fake, torch.ones(10_000))


@pytest.mark.parametrize("name", ["gan", "wgan", "wgan-gp", "hinge"])
def test_registry_single_adversary(name):
    (spec,) = losses.adversaries(LossConfig(name=name))
    assert spec.name == "D" and spec.g_weight == 1.0
    assert (spec.clip is not None) == (name == "wgan")
    assert (spec.gp_weight > 0) == (name == "wgan-gp")


def test_combined_is_a_discriminator_and_a_clipped_critic():
    d, critic = losses.adversaries(LossConfig(name="combined", combined_weight=0.3, clip=0.02))
    assert (d.name, d.loss, d.g_weight, d.clip) == ("D", losses.LOSSES["gan"], pytest.approx(0.7), None)
    assert (critic.name, critic.loss, critic.g_weight, critic.clip) == ("critic", losses.LOSSES["wgan"], 0.3, 0.02)


def test_rpgan_pairs_each_real_with_its_fake():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0])
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    d = (softplus(0.5 - 2.0) + softplus(1.0 + 1.0)) / 2
    g = (softplus(2.0 - 0.5) + softplus(-1.0 - 1.0)) / 2
    assert losses.LOSSES["rpgan"].d(real, fake).item() == pytest.approx(d)
    assert losses.LOSSES["rpgan"].g(fake, real).item() == pytest.approx(g)
    assert losses.LOSSES["rpgan"].pairs_real and not losses.LOSSES["gan"].pairs_real
    # shifting every logit by the same amount changes nothing: only the pairs' differences count
    assert losses.d_rpgan(real + 3, fake + 3).item() == pytest.approx(d)


def test_r1_of_a_linear_and_a_quadratic_discriminator():
    w = torch.tensor([3.0, -4.0])  # D(x) = w.x: gradient w everywhere, ||w||^2 = 25
    x = torch.randn(5, 2)
    assert losses.gradient_norm_penalty(lambda images, labels=None: images @ w, x).item() == pytest.approx(25.0)
    # D(x) = ||x||^2: gradient 2x, so the penalty is 4 E||x||^2
    penalty = losses.gradient_norm_penalty(lambda images, labels=None: images.square().sum(1), x)
    assert penalty.item() == pytest.approx(4 * x.square().sum(1).mean().item(), rel=1e-5)


def test_r1_r2_weights_reach_the_adversary():
    spec = losses.adversaries(LossConfig(name="rpgan", r1_gamma=2.0, r2_gamma=0.5))[0]
    assert (spec.r1_gamma, spec.r2_gamma) == (2.0, 0.5)


FLOORS = {  # hand-checked lowest (D, G) losses the thresholds can see
    "gan": (0.0, 0.0),  # BCE of probabilities against targets in [0, 1]
    "wgan": (-math.inf, -math.inf),  # E[C(fake)] - E[C(real)] and -E[C(fake)]: scores without bounds
    "wgan-gp": (-math.inf, -math.inf),
    "hinge": (0.0, -math.inf),  # relu(1 - real) + relu(1 + fake); G: -E[D(fake)]
    "rpgan": (0.0, 0.0),  # softplus
    "combined": (-math.inf, -math.inf),  # D's threshold applies to the critic too; G's loss has a Wasserstein share
}


@pytest.mark.parametrize("name", FLOORS)
def test_loss_floors_are_the_hand_checked_ones(name):
    assert tuple(losses.loss_floors(LossConfig(name=name))) == FLOORS[name]


def test_combined_without_the_critics_share_has_the_gan_floor_for_g():
    assert tuple(losses.loss_floors(LossConfig(name="combined", combined_weight=0.0))) == (-math.inf, 0.0)
    assert tuple(losses.loss_floors(LossConfig(name="combined", combined_weight=1.0))) == (-math.inf, -math.inf)


@pytest.mark.parametrize("name", ["gan", "wgan", "hinge", "rpgan"])
def test_losses_stay_above_their_floors_and_reach_them(name):
    loss = losses.LOSSES[name]
    g = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 10.0, 1000.0):
        real, fake = scale * torch.randn(64, generator=g), scale * torch.randn(64, generator=g)
        assert loss.d(real, fake).item() >= loss.d_min and loss.g(fake, real).item() >= loss.g_min
    real, fake = torch.full((4,), 200.0), torch.full((4,), -200.0)  # D sure of every image, by far
    assert loss.d(real, fake).item() == max(loss.d_min, -400.0)  # gan, hinge, rpgan reach 0.0; wgan keeps going
    assert loss.g(-fake, -real).item() == max(loss.g_min, -200.0)  # G fooling D as surely
