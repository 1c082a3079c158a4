import itertools

import pytest
import torch

from raygan.config import CHOICES, build_config
from raygan.models import ARCHS, build_discriminator, build_generator, count_parameters


def test_pytorch_examples_dcgan_parameter_counts():
    """64x64x3, latent 100, widths 64, 5 layers each: the pytorch/examples DCGAN exactly."""
    cfg = build_config({"data": {"image_size": 64}, "model": {"g_layers": 5, "d_layers": 5}})
    assert count_parameters(build_generator(cfg, 3, 0)) == 3_576_704
    assert count_parameters(build_discriminator(cfg, 3, 0)) == 2_765_568


ARCH_NAMES = sorted(ARCHS)


def test_every_arch_the_config_accepts_has_builders_and_no_other():
    assert ARCH_NAMES == sorted(CHOICES["model.arch"])


@pytest.mark.parametrize(
    "size, layers", [(8, 3), (16, 2), (16, 4), (32, 2), (32, 4), (32, 5), (64, 3), (64, 5), (128, 6)]
)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_shapes_for_sizes_and_layer_counts(size, layers, channels, arch):
    model = {"arch": arch, "g_layers": layers, "d_layers": layers, "g_width": 8, "d_width": 8}
    cfg = build_config({"data": {"image_size": size}, "model": model})
    G, D = build_generator(cfg, channels, 0), build_discriminator(cfg, channels, 0)
    images = G(torch.randn(3, cfg.model.latent_dim))
    assert images.shape == (3, channels, size, size)
    assert images.abs().max() <= 1
    assert D(images).shape == (3,)


NORMS = ["batch", "none", "layer", "spectral"]
ACTIVATIONS = ["relu", "leaky_relu"]


@pytest.mark.parametrize(
    "arch, d_norm, activation, conditional", list(itertools.product(ARCH_NAMES, NORMS, ACTIVATIONS, [False, True]))
)
def test_options_give_finite_outputs(arch, d_norm, activation, conditional):
    cfg = build_config(
        {
            "model": {
                "arch": arch,
                "d_norm": d_norm,
                "g_activation": activation,
                "d_activation": activation,
                "d_dropout": 0.3,
                "conditional": conditional,
                "g_width": 16,
                "d_width": 16,
            }
        }
    )
    G, D = build_generator(cfg, 1, 10), build_discriminator(cfg, 1, 10)
    labels = torch.arange(4) % 10 if conditional else None
    logits = D(G(torch.randn(4, 100), labels), labels)
    assert logits.shape == (4,) and torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_conditional_generator_depends_on_the_label(arch):
    """G's label embedding starts at zero (G starts unconditional, see dcgan.py) and is wired in."""
    cfg = build_config({"model": {"arch": arch, "conditional": True, "g_width": 8}})
    G = build_generator(cfg, 1, 10).eval()
    z = torch.randn(1, 100).repeat(2, 1)
    assert torch.equal(*G(z, torch.tensor([3, 7])))
    torch.nn.init.normal_(G.label_embedding.weight)  # as training moves it
    images = G(z, torch.tensor([3, 7]))
    assert not torch.allclose(images[0], images[1])
    D = build_discriminator(cfg, 1, 10).eval()
    x = images[:1].repeat(2, 1, 1, 1).detach()
    scores = D(x, torch.tensor([3, 7]))
    assert scores[0] != scores[1]


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_g_norm_none_has_no_batchnorm(arch):
    cfg = build_config({"model": {"arch": arch, "g_norm": "none", "d_norm": "layer"}})
    G = build_generator(cfg, 1, 0)
    modules = list(G.modules()) + list(build_discriminator(cfg, 1, 0).modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in modules)
    z = torch.randn(4, cfg.model.latent_dim, requires_grad=True)
    G(z).sum().backward()  # no in-place activation overwrote a tensor the shortcut still reads
    assert torch.isfinite(z.grad).all()


def test_resnet_generator_adds_the_upsampled_input_to_each_block():
    """A residual block with its residual branch zeroed is exactly its 1x1 shortcut on the upsampled input."""
    from raygan.models.resnet import UpBlock

    block = UpBlock(8, 4, "relu", "batch", 0.1).eval()
    torch.nn.init.zeros_(block.residual[-1].weight)
    torch.nn.init.zeros_(block.residual[-1].bias)
    x = torch.randn(2, 8, 4, 4)
    expected = torch.nn.functional.conv2d(x.repeat_interleave(2, 2).repeat_interleave(2, 3), block.shortcut.weight)
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_bn_momentum_reaches_the_layers(arch):
    cfg = build_config({"model": {"arch": arch, "bn_momentum": 0.2}})
    modules = list(build_generator(cfg, 1, 0).modules()) + list(build_discriminator(cfg, 1, 0).modules())
    bns = [m for m in modules if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.2 for m in bns)


def test_packed_discriminator_scores_each_pack_once():
    """PacGAN: D sees 2 samples at once; both members of a pack get the pack's logit."""
    cfg = build_config({"data": {"image_size": 16}, "model": {"g_layers": 3, "d_layers": 3, "d_width": 8, "pack": 2}})
    D = build_discriminator(cfg, 1, 0).eval()
    assert D.inner.features[0].in_channels == 2
    images = torch.randn(6, 1, 16, 16)
    logits = D(images)
    assert logits.shape == (6,)
    assert torch.equal(logits[0::2], logits[1::2])
    swapped = images[[1, 0, 2, 3, 4, 5]]  # order within a pack matters to D, other packs are unaffected
    assert torch.equal(D(swapped)[2:], logits[2:])
