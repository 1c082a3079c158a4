"""The `digits` feature network: a small CNN classifier of the built-in digits, shipped as package data.

Retrain it (deterministic on CPU, about a minute on 2 cores) and print its held-out accuracy:

    python -m raygan.metrics.digits_net --out raygan/metrics/weights/digits_cnn.pt

FID/KID use its 128 pooled features; the health monitor uses its class predictions. It accepts any
image size (inputs are resized to 32x32) and images in [0, 1], as torchmetrics passes them through.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

WEIGHTS = Path(__file__).parent / "weights" / "digits_cnn.pt"
INPUT_SIZE = 32


class DigitsNet(nn.Module):
    """Three conv blocks, global average pooling (the features), a linear classifier."""

    num_features = 128  # torchmetrics reads this from a custom feature extractor

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(64, 128, 3, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(128, 10)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """N x 1 x H x W in [0, 1] -> 32x32 in [-1, 1], the training range."""
        if images.shape[-1] != INPUT_SIZE:
            images = F.interpolate(
                images.float(),
                size=(INPUT_SIZE, INPUT_SIZE),
                mode="bilinear",
                align_corners=False,
                antialias=images.shape[-1] > INPUT_SIZE,
            )
        return images.float() * 2 - 1

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self._prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))

    def inference_copy(self) -> DigitsNet:
        """The same function, faster: BatchNorm folded into the convs, channels-last weights."""
        return fuse_batchnorm(self)


def fuse_batchnorm(net: nn.Module) -> nn.Module:
    """An eval copy of a network whose `body` is a Sequential, each BatchNorm folded into the conv
    before it, with channels-last weights: the same function, faster."""
    net = copy.deepcopy(net).eval()
    layers, fused = list(net.body), []
    while layers:
        layer = layers.pop(0)
        if isinstance(layer, nn.Conv2d) and layers and isinstance(layers[0], nn.BatchNorm2d):
            layer = fuse_conv_bn_eval(layer, layers.pop(0))
        fused.append(layer)
    net.body = nn.Sequential(*fused)
    return net.to(memory_format=torch.channels_last).requires_grad_(False)


def save_float16(net: nn.Module, path: Path) -> None:
    """The weights as shipped: float16 halves the package data; loading turns them back to float32."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, path)


def load_digits_net(path: Path = WEIGHTS) -> DigitsNet:
    net = DigitsNet()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return net.eval().requires_grad_(False)


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 3 px and scaling of +-10%: digits drawn a little off-centre."""
    n = images.shape[0]
    scale = 1 + (torch.rand(n, generator=generator) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * (6 / INPUT_SIZE) * 2
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


def accuracy(net: DigitsNet, images01: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (net(images01).argmax(1) == labels).float().mean().item()


def train(epochs: int = 40, seed: int = 0) -> tuple[DigitsNet, float]:
    from raygan.data import digits

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_set, test_set = digits("train", INPUT_SIZE), digits("test", INPUT_SIZE)
    x, y = (train_set.images + 1) / 2, train_set.labels
    net = DigitsNet()
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = (len(x) + 63) // 64
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=epochs * steps_per_epoch)
    for _epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            loss = F.cross_entropy(net(_augment(x[batch], generator)), y[batch], label_smoothing=0.05)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    return net, accuracy(net, (test_set.images + 1) / 2, test_set.labels)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    start = time.time()
    net, test_accuracy = train(args.epochs, args.seed)
    save_float16(net, args.out)
    shipped = load_digits_net(args.out)
    from raygan.data import digits

    test_set = digits("test", INPUT_SIZE)
    print(
        f"trained in {time.time() - start:.0f} s; digits:test accuracy {test_accuracy:.4f} "
        f"(as shipped in float16: {accuracy(shipped, (test_set.images + 1) / 2, test_set.labels):.4f}); "
        f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)"
    )


if __name__ == "__main__":
    main()
