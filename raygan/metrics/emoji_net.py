"""The `emoji` feature network: a CNN that recognises each built-in emoji, shipped as package data.

Retrain them (deterministic on CPU) and print their accuracies:

    python -m raygan.metrics.emoji_net                    # weights/emoji_cnn.pt, reads 32x32 (17 min on 2 busy cores)
    python -m raygan.metrics.emoji_net --input-size 64    # weights/emoji64_cnn.pt, reads 64x64

A network trained on the 9 categories alone mostly reads colour: it scores a generator of colour blobs
in the right palette better than real emoji blurred to half resolution. This one is trained to tell
every emoji apart (1,911 identities, skin tones folded in, so skin colour cannot decide) under random
shifts, scaling, x-flips and brightness, contrast and saturation changes, so its features must see
shape. Its 256 features (a layer over the whole 4x4 map, so layout counts) feed FID/KID; a second head
reads the category, which the health monitor and the category histogram use. Inputs are images in
[0, 1] of any size, resized to the network's input size: 32x32, or 64x64 for the second network, which
puts a stage in front (64 -> 32 px) so that detail a 32x32 reading averages away counts.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from raygan.metrics.digits_net import fuse_batchnorm, save_float16

FOLDER = Path(__file__).parent / "weights"
WEIGHTS = {32: FOLDER / "emoji_cnn.pt", 64: FOLDER / "emoji64_cnn.pt"}  # by input size
NUM_CATEGORIES = 9


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class EmojiNet(nn.Module):
    """Four conv stages (32 -> 4 px; at 64x64 a fifth in front), a linear layer over the 4x4 map (the
    features), two heads."""

    num_features = 256  # torchmetrics reads this from a custom feature extractor

    def __init__(self, num_identities: int, input_size: int = 32):
        super().__init__()
        if input_size not in WEIGHTS:
            raise ValueError(f"input_size {input_size}: one of {sorted(WEIGHTS)}")
        self.input_size = input_size
        stem = [] if input_size == 32 else [*_conv(3, 16), nn.MaxPool2d(2)]  # 64 -> 32
        self.body = nn.Sequential(
            *stem,
            *_conv(3 if input_size == 32 else 16, 32),
            nn.MaxPool2d(2),  # 16x16
            *_conv(32, 64),
            nn.MaxPool2d(2),  # 8x8
            *_conv(64, 128),
            *_conv(128, 128),
            nn.MaxPool2d(2),  # 4x4
            *_conv(128, 128),
            nn.Flatten(),
            nn.Linear(128 * 16, self.num_features),
            nn.ReLU(),
        )
        self.identity_head = nn.Linear(self.num_features, num_identities)
        self.category_head = nn.Linear(self.num_features, NUM_CATEGORIES)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W in [0, 1] -> the input size in [-1, 1], the training range."""
        size = self.input_size
        if images.shape[-1] != size:
            shrinking = images.shape[-1] > size
            images = F.interpolate(
                images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking
            )
        return images.float() * 2 - 1

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self._prepare(images))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(images)
        return self.identity_head(features), self.category_head(features)

    def inference_copy(self) -> EmojiNet:
        """The same function, faster: BatchNorm folded into the convs, channels-last weights."""
        return fuse_batchnorm(self)


def load_emoji_net(input_size: int = 32) -> EmojiNet:
    state = torch.load(WEIGHTS[input_size], map_location="cpu", weights_only=True)
    net = EmojiNet(num_identities=state["identity_head.weight"].shape[0], input_size=input_size)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return net.eval().requires_grad_(False)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Images in [0, 1], each shifted by up to 3 px, scaled +-10%, x-flipped half the time, and given
    random brightness (+-0.15), contrast and saturation (x0.7..1.3); shifts are in 32x32 pixels at any size."""
    n = images.shape[0]
    scale = 1 + (torch.rand(n, generator=generator) - 0.5) * 0.2
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = flip / scale
    theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = (torch.rand(n, 2, generator=generator) - 0.5) * (6 / 32) * 2
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images * 2 - 1, grid, padding_mode="border", align_corners=False) * 0.5 + 0.5

    def factor(spread: float) -> torch.Tensor:
        return 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 2 * spread

    images = images + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.3
    grey = images.mean(1, keepdim=True)
    images = grey + (images - grey) * factor(0.3)
    mean = images.mean((1, 2, 3), keepdim=True)
    return (mean + (images - mean) * factor(0.3)).clamp(0, 1)


def _identity_labels(identity: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Identities renumbered 0..K-1 over the training split."""
    values, labels = identity.unique(return_inverse=True)
    return labels, len(values)


def accuracy(net: EmojiNet, images01: torch.Tensor, labels: torch.Tensor, head: int) -> float:
    with torch.no_grad():
        hits = [
            (net(images01[i : i + 500])[head].argmax(1) == labels[i : i + 500]).sum()
            for i in range(0, len(labels), 500)
        ]
    return (sum(hits) / len(labels)).item()


def train(
    epochs: int = 30, seed: int = 0, batch_size: int = 128, input_size: int = 32
) -> tuple[EmojiNet, dict[str, float]]:
    from raygan.data import emoji

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_set, test_set = emoji("train", input_size), emoji("test", input_size)
    x, category = (train_set.images + 1) / 2, train_set.labels
    identity, num_identities = _identity_labels(train_set.identity)
    net = EmojiNet(num_identities, input_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=epochs * steps_per_epoch)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            identity_logits, category_logits = net(augment(x[batch], generator))
            loss = F.cross_entropy(identity_logits, identity[batch], label_smoothing=0.1) + F.cross_entropy(
                category_logits, category[batch], label_smoothing=0.1
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}", flush=True)
    net.eval()
    augmented = augment(x, torch.Generator().manual_seed(seed + 1))
    return net, {
        "identity_train_augmented": accuracy(net, augmented, identity, 0),
        "category_train_augmented": accuracy(net, augmented, category, 1),
        "category_test": accuracy(net, (test_set.images + 1) / 2, test_set.labels, 1),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-size", type=int, choices=sorted(WEIGHTS), default=32)
    parser.add_argument("--out", type=Path, help="default: the shipped weights file for the input size")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = args.out or WEIGHTS[args.input_size]
    torch.set_num_threads(2)
    start = time.time()
    net, scores = train(args.epochs, args.seed, input_size=args.input_size)
    save_float16(net, out)
    print(
        f"trained in {time.time() - start:.0f} s; "
        + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        + f"; wrote {out} ({out.stat().st_size // 1024} KB)"
    )


if __name__ == "__main__":
    main()
