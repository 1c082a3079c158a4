"""Feature extractors for FID/KID, a registry by `eval.features` name.

    extractor = load_extractor("digits", channels=1)
    feats = extractor.features(images01)      # N x num_features, images in [0, 1]
    labels = extractor.classify(images01)     # N class ids, or None where the extractor has no classes

- `digits`: the shipped digits CNN (128 features); on 3 channels it is applied per channel
  (`stacked-digits`: 384 features, class = 100a + 10b + c, 1,000 modes).
- `emoji`: the shipped emoji CNNs (256 features that see shape: they tell the 1,911 emoji apart under
  shifts and colour changes); class = one of the 9 emoji categories. Images of 64x64 or more are read by
  the network trained at 64x64, smaller ones at 32x32. 1-channel images are repeated to RGB.
- `inception`: torchmetrics' FID InceptionV3 (2048 features); `eval.inception_weights` is a local
  weights file for clusters without internet.
- a path to a TorchScript module (`*.pt`/`*.pth`/`*.ts`): maps [0, 1] images to N x F features.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from raygan.errors import ConfigError, first_line


class Extractor(nn.Module):
    """Features (and optionally classes) of images in [0, 1]; `identity` keys cached real statistics."""

    num_features: int
    num_classes: int = 0
    identity: str

    def features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classify(self, images: torch.Tensor) -> torch.Tensor | None:
        return None

    def features_and_classes(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.features(images), self.classify(images)

    batch_size = 500  # images per forward pass in `fid.extract`

    @property
    def device(self) -> torch.device:
        """Where the network's weights are: `fid.extract` moves each batch there."""
        for tensor in itertools.chain(self.parameters(), self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class DigitsExtractor(Extractor):
    batch_size = 64  # small batches stay in cache: 10,000 images in about 2 s on 2 cores, not 7

    def __init__(self, channels: int):
        super().__init__()
        from raygan.metrics.digits_net import WEIGHTS, DigitsNet, load_digits_net

        self.net: DigitsNet = load_digits_net().inference_copy()
        self.channels = channels
        self.num_features = DigitsNet.num_features * channels
        self.num_classes = 10**channels
        self.identity = f"digits-{_file_digest(WEIGHTS)}-c{channels}"

    @torch.inference_mode()
    def features_and_classes(self, images):
        n, c = images.shape[:2]
        per_channel = images.reshape(n * c, 1, *images.shape[2:]).contiguous(memory_format=torch.channels_last)
        features = self.net.features(per_channel)
        digits = self.net.classifier(features).argmax(1).reshape(n, c)
        place = 10 ** torch.arange(c - 1, -1, -1, device=digits.device)
        return features.reshape(n, -1), (digits * place).sum(1)

    def features(self, images):
        return self.features_and_classes(images)[0]

    def classify(self, images):
        return self.features_and_classes(images)[1]


class EmojiExtractor(Extractor):
    batch_size = 250
    num_features = 256
    num_classes = 9

    def __init__(self):
        super().__init__()
        from raygan.metrics.emoji_net import WEIGHTS, load_emoji_net

        self.nets = nn.ModuleDict({str(size): load_emoji_net(size).inference_copy() for size in WEIGHTS})
        self.identity = "emoji-" + "-".join(_file_digest(path) for path in WEIGHTS.values())

    def net_for(self, images: torch.Tensor) -> nn.Module:
        """The 64x64 network for images of 64x64 or more (its detail counts), the 32x32 one below."""
        return self.nets["64" if images.shape[-1] >= 64 else "32"]

    @torch.inference_mode()
    def features_and_classes(self, images):
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        net = self.net_for(images)
        features = net.features(images.contiguous(memory_format=torch.channels_last))
        return features, net.category_head(features).argmax(1)

    def features(self, images):
        return self.features_and_classes(images)[0]

    def classify(self, images):
        return self.features_and_classes(images)[1]


class InceptionExtractor(Extractor):
    """torchmetrics' FID InceptionV3 (pool3, 2048 features); 1-channel images are repeated to RGB."""

    num_features = 2048

    def __init__(self, weights: str | None):
        super().__init__()
        self.net = load_inception(weights)
        self.identity = f"inception-{_file_digest(Path(weights)) if weights else 'default'}"

    @torch.no_grad()
    def features(self, images):
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        return self.net((images.clamp(0, 1) * 255).to(torch.uint8)).float()


def load_inception(weights: str | None) -> nn.Module:
    """torchmetrics' FeatureExtractorInceptionV3, from a local file when given; ConfigError naming the fix."""
    from torchmetrics.image.fid import NoTrainInceptionV3
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if not _TORCH_FIDELITY_AVAILABLE:
        raise ConfigError(
            "eval.features",
            "inception needs torch-fidelity (torchmetrics' InceptionV3): `pip install -c constraints.txt "
            "torch-fidelity` where torchvision installs (CUDA torch), or use features: digits or a TorchScript file",
        )
    if weights is None:
        raise ConfigError(
            "eval.inception_weights",
            "inception needs a local weights file on this machine: download pt_inception-2015-12-05-6726825d.pth "
            "(torch-fidelity's FID InceptionV3) once and set eval.inception_weights to its path",
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError("eval.inception_weights", f"{weights}: no such file")
    try:
        return NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
        )
    except Exception as e:  # torch-fidelity raises several types for bad files
        raise ConfigError("eval.inception_weights", f"{weights}: cannot load InceptionV3 weights ({e})") from None


class ScriptedExtractor(Extractor):
    def __init__(self, path: str):
        super().__init__()
        file = Path(path).expanduser()
        if not file.is_file():
            raise ConfigError("eval.features", f"{path}: no such TorchScript file")
        try:
            self.net = torch.jit.load(str(file), map_location="cpu").eval()
        except (RuntimeError, ValueError) as e:
            raise ConfigError("eval.features", f"{path}: not a TorchScript module ({first_line(e)})") from None
        self.num_features = int(getattr(self.net, "num_features", 0)) or None
        self.identity = f"script-{_file_digest(file)}"

    @torch.no_grad()
    def features(self, images):
        return self.net(images).float().flatten(1)


FEATURES: dict[str, Callable[..., Extractor]] = {
    "digits": lambda channels, weights: DigitsExtractor(channels),
    "emoji": lambda channels, weights: EmojiExtractor(),
    "inception": lambda channels, weights: InceptionExtractor(weights),
}


def load_extractor(name: str, channels: int, inception_weights: str | None = None) -> Extractor:
    """The extractor `eval.features` names, or a TorchScript module at that path."""
    if name in FEATURES:
        extractor = FEATURES[name](channels, inception_weights)
    elif Path(name).suffix in (".pt", ".pth", ".ts", ".jit"):
        extractor = ScriptedExtractor(name)
    else:
        raise ConfigError("eval.features", f"{name!r} is not one of: {', '.join(FEATURES)}, or a TorchScript file")
    if extractor.num_features is None:  # a scripted module without the attribute: measure it
        extractor.num_features = extractor.features(torch.rand(2, channels, 32, 32)).shape[1]
    return extractor.eval()
