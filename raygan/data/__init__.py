"""Datasets: images as float tensors in [-1, 1] (N x C x H x W) with integer labels.

    dataset = load_dataset(cfg.data)                 # training split
    test = load_dataset(cfg.data, split="test")      # held-out split (digits, stacked-digits)
    images, labels = dataset.batch(torch.arange(16))

Built-in data works offline: `digits` is scikit-learn's bundled 8x8 digits, `stacked-digits` puts three
of them in the three channels (label = the 3-digit number, 1,000 modes), `emoji` is the 3,786 64x64 Noto
Color Emoji shipped in raygan/data/emoji (label = one of 9 categories), `random` is noise. Transparent
pixels (emoji, RGBA folder images) are composited on `data.background`.
"""

from __future__ import annotations

import functools
import io
import json
import lzma
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow.fs
import torch
import torch.nn.functional as F

from raygan import storage
from raygan.config import DataConfig, background_rgb
from raygan.errors import UserError, first_line

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DIGITS_TEST_FRACTION = 0.2  # fixed held-out split: 1,437 train / 360 test images
STACKED_SIZES = {"train": 60_000, "test": 10_000}
RANDOM_SIZE = 512
EMOJI_DIR = Path(__file__).parent / "emoji"  # built by raygan/data/build_emoji.py
EMOJI_SIZES = (16, 32, 64)  # the shipped images are 64x64; halving keeps them exact to resample


class ImageDataset:
    """Indexable images and labels; subclasses may compute items on the fly."""

    num_classes: int
    channels: int
    skipped: int = 0  # undecodable files left out

    def __len__(self) -> int:
        raise NotImplementedError

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class TensorImages(ImageDataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int):
        self.images = images.contiguous()
        self.labels = labels.long()
        self.num_classes = num_classes
        self.channels = images.shape[1]

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices):
        return self.images[indices], self.labels[indices]


class StackedDigits(ImageDataset):
    """Three digits in three channels, drawn once with a fixed seed; label = 100a + 10b + c."""

    def __init__(self, digits: TensorImages, size: int, seed: int):
        rng = torch.Generator().manual_seed(seed)
        self.digits = digits
        self.picks = torch.randint(len(digits), (size, 3), generator=rng)
        self.num_classes = 1000
        self.channels = 3

    def __len__(self) -> int:
        return self.picks.shape[0]

    def batch(self, indices):
        picks = self.picks[indices]  # B x 3
        images = self.digits.images[picks.flatten(), 0].view(len(indices), 3, *self.digits.images.shape[2:])
        digit_labels = self.digits.labels[picks]
        return images, digit_labels[:, 0] * 100 + digit_labels[:, 1] * 10 + digit_labels[:, 2]


def center_square(images: torch.Tensor) -> torch.Tensor:
    """The centred square of N x C x H x W images, as GAN datasets are prepared (a 178 x 218 face is
    cropped to 178 x 178, not squashed)."""
    height, width = images.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return images[..., top : top + side, left : left + side]


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of N x C x H x W floats (antialiased when shrinking)."""
    if images.shape[-2:] == (size, size):
        return images
    shrinking = images.shape[-1] > size
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)


@functools.lru_cache(maxsize=4)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images 1797x8x8 in [0, 16], labels, is_test mask): a stratified split fixed by seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    index = np.arange(len(bunch.target))
    _, test_index = train_test_split(index, test_size=DIGITS_TEST_FRACTION, random_state=0, stratify=bunch.target)
    is_test = np.zeros(len(index), dtype=bool)
    is_test[test_index] = True
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64), is_test


def digits(split: str, image_size: int) -> TensorImages:
    images, labels, is_test = _digits_arrays()
    keep = is_test if split == "test" else ~is_test
    x = torch.from_numpy(images[keep])[:, None] / 8.0 - 1.0  # [0, 16] -> [-1, 1]
    return TensorImages(resize(x, image_size).clamp(-1, 1), torch.from_numpy(labels[keep]), 10)


def composite(rgba: np.ndarray, background: str) -> np.ndarray:
    """... x 4 uint8 RGBA -> ... x 3 float32 RGB in 0..255, over an opaque background colour."""
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    colour = np.asarray(background_rgb(background), dtype=np.float32)
    return rgba[..., :3].astype(np.float32) * alpha + colour * (1.0 - alpha)


@functools.lru_cache(maxsize=1)
def emoji_arrays() -> tuple[np.ndarray, dict]:
    """(3,786 x 64 x 64 x 4 uint8 RGBA, the index: categories and per image category, identity, test flag)."""
    images = np.load(io.BytesIO(lzma.decompress((EMOJI_DIR / "emoji64.npy.xz").read_bytes())))
    index = json.loads((EMOJI_DIR / "emoji64.json").read_text())
    return images, index


def emoji(split: str, image_size: int, background: str = "white") -> TensorImages:
    """The built-in emoji (train: 3,028, test: 758), labelled by category; `.identity` holds each
    image's emoji (skin-tone variants share their base's)."""
    images, index = emoji_arrays()
    keep = np.asarray(index["test"], dtype=bool)
    keep = keep if split == "test" else ~keep
    rgb = torch.from_numpy(composite(images[keep], background)).permute(0, 3, 1, 2)
    dataset = TensorImages(
        resize(rgb / 127.5 - 1.0, image_size).clamp(-1, 1),
        torch.tensor(index["category"])[torch.from_numpy(keep)],
        len(index["categories"]),
    )
    dataset.identity = torch.tensor(index["identity"])[torch.from_numpy(keep)]
    dataset.class_names = index["categories"]
    return dataset


def random_noise(image_size: int, channels: int, seed: int = 0) -> TensorImages:
    rng = torch.Generator().manual_seed(seed)
    images = torch.rand(RANDOM_SIZE, channels, image_size, image_size, generator=rng) * 2 - 1
    return TensorImages(images, torch.arange(RANDOM_SIZE) % 10, 10)


def decode_image(data: bytes, channels: int, background: str = "white") -> np.ndarray | None:
    """An image file's bytes -> H x W (x 3) array, transparency composited on `background`; None if
    undecodable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
            if not has_alpha:
                return np.asarray(image.convert("L" if channels == 1 else "RGB"))
            rgb = composite(np.asarray(image.convert("RGBA")), background)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    if channels == 1:  # ITU-R 601 luma, as Pillow's convert("L")
        return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return rgb


def images_to_tensor(arrays: list[np.ndarray], image_size: int) -> torch.Tensor:
    """uint8 H x W (x C) arrays of any size -> N x C x size x size floats in [-1, 1] (centred squares)."""
    out = []
    for array in arrays:
        x = torch.from_numpy(np.array(array, dtype=np.float32))
        x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
        out.append(resize(center_square(x[None]) / 127.5 - 1.0, image_size)[0])
    return torch.stack(out).clamp(-1, 1)


class FolderInfo(NamedTuple):
    files: int
    class_names: list[str]


def folder_filesystem(path: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """(filesystem, the folder's path inside it) for a local folder or a URI; UserError naming data.path."""
    try:
        return pyarrow.fs.FileSystem.from_uri(path if storage.is_uri(path) else str(_local(path)))
    except (pyarrow.ArrowInvalid, OSError) as e:
        raise UserError(f"data.path: {path}: {e}") from None


def _local(path: str) -> Path:
    return Path(path).expanduser().resolve()


def list_images(path: str) -> tuple[str, list[str], FolderInfo]:
    """(root inside its filesystem, image file paths, info) for a folder or prefix; UserError if none."""
    fs, root = folder_filesystem(path)
    if not storage.is_uri(path) and not _local(path).is_dir():
        raise UserError(f"data.path: {path}: no such folder")
    try:
        entries = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as e:
        raise UserError(f"data.path: {path}: cannot list ({e})") from None
    files = sorted(
        e.path
        for e in entries
        if e.type == pyarrow.fs.FileType.File and "." + e.path.rsplit(".", 1)[-1].lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise UserError(f"data.path: {path}: no readable images (no image files)")
    relative = [f[len(root) :].lstrip("/").split("/") for f in files]
    class_names = sorted({parts[0] for parts in relative if len(parts) > 1})
    return root, files, FolderInfo(len(files), class_names)


def folder_label(path: str, root: str, class_index: dict[str, int]) -> int:
    """The class of an image file under `root`: its first sub-folder's (0 for a file in `root` itself)."""
    parts = path[len(root) :].lstrip("/").split("/")
    return class_index.get(parts[0], 0) if len(parts) > 1 else 0


def read_folder(cfg: DataConfig, limit: int | None = None) -> TensorImages:
    """The images of a folder or prefix, local or s3:// (all, or `limit` evenly spread over the sorted
    files), decoded into memory; `skipped` counts the undecodable files, the class is the first sub-folder."""
    root, files, info = list_images(cfg.path)
    fs, _ = folder_filesystem(cfg.path)
    if limit is not None and limit < len(files):
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, limit).round()]
    class_index = {name: i for i, name in enumerate(info.class_names)}
    arrays, labels = [], []
    for path in files:
        with fs.open_input_stream(path) as stream:
            array = decode_image(stream.read(), cfg.channels, cfg.background)
        if array is not None:
            arrays.append(array)
            labels.append(folder_label(path, root, class_index))
    if not arrays:
        raise UserError(f"data.path: {cfg.path}: no readable images (skipped {len(files)} files)")
    dataset = TensorImages(
        images_to_tensor(arrays, cfg.image_size), torch.tensor(labels), max(1, len(info.class_names))
    )
    dataset.skipped = len(files) - len(arrays)
    return dataset


def _read_data_file(path: str) -> bytes:
    """A local file or an object (s3://, gs://) through raygan.storage; UserError naming data.path."""
    try:
        storage.check_uri(path)
        data = storage.read_bytes(storage.expand(path))
    except UserError as e:
        raise UserError(f"data.path: {e}") from None
    except (OSError, ValueError) as e:  # pyarrow: unreachable endpoint, refused credentials, missing bucket
        raise UserError(f"data.path: {path}: cannot read ({first_line(e)})") from None
    if data is None:
        raise UserError(f"data.path: {path}: no such file")
    return data


def npz_images(path: str, image_size: int) -> TensorImages:
    """An .npz (local or s3://) with `images` (N x C x H x W or N x H x W x C, uint8 or floats in [-1, 1])
    and optional `labels`."""
    data = _read_data_file(path)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if "images" not in npz:
                raise UserError(f"data.path: {path}: has no 'images' array (found: {', '.join(npz.files)})")
            images = npz["images"]
            labels = npz["labels"] if "labels" in npz else np.zeros(len(images), dtype=np.int64)
    except (ValueError, OSError) as e:
        raise UserError(f"data.path: {path}: not a readable .npz ({e})") from None
    if images.ndim != 4 or len(images) == 0:
        raise UserError(f"data.path: {path}: 'images' must be a non-empty N x C x H x W array, got {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    x = x.float() / 127.5 - 1.0 if images.dtype == np.uint8 else x.float()
    labels_t = torch.from_numpy(np.asarray(labels).astype(np.int64))
    return TensorImages(resize(center_square(x), image_size).clamp(-1, 1), labels_t, int(labels_t.max()) + 1)


def load_dataset(cfg: DataConfig, split: str = "train", seed: int = 0) -> ImageDataset:
    """The dataset `cfg` names; `split` is train or test (test exists for the built-in data)."""
    if cfg.name == "digits":
        return digits(split, cfg.image_size)
    if cfg.name == "emoji":
        return emoji(split, cfg.image_size, cfg.background)
    if cfg.name == "stacked-digits":
        return StackedDigits(digits(split, cfg.image_size), STACKED_SIZES[split], seed=1 if split == "test" else 0)
    if cfg.name == "random":
        return random_noise(cfg.image_size, cfg.channels, seed=seed)
    if cfg.name == "folder":
        return read_folder(cfg)
    if cfg.name == "npz":
        return npz_images(cfg.path, cfg.image_size)
    raise UserError(f"data.name: unknown dataset {cfg.name!r}")


BUILTIN_CHANNELS = {"digits": 1, "stacked-digits": 3, "emoji": 3}


def check_source(cfg: DataConfig) -> int:
    """Fail fast, before Ray starts, on a missing or empty data source (UserError naming data.path);
    returns the channels its images have."""
    if cfg.name == "npz":
        return npz_images(cfg.path, 8).channels
    elif cfg.name == "folder" and not storage.is_uri(cfg.path):
        _, files, _ = list_images(cfg.path)
        if not any(decode_image(Path(f).read_bytes(), cfg.channels, cfg.background) is not None for f in files):
            raise UserError(f"data.path: {cfg.path}: no readable images ({len(files)} image files)")
    return BUILTIN_CHANNELS.get(cfg.name, cfg.channels)


def dataset_from_spec(spec: str, image_size: int) -> ImageDataset:
    """`digits`, `digits:test`, `stacked-digits[:test]`, `emoji[:test]` -> dataset (used by `raygan fid`)."""
    name, _, split = spec.partition(":")
    return load_dataset(DataConfig(name=name, image_size=image_size), split=split or "train")


class BatchIndices:
    """Which examples each rank reads for global batch k: epochs are seeded permutations laid end to end.

    Rank r of w takes the r-th slice of the global batch, so w workers with batch B/w read exactly
    what one worker with batch B reads, and the position is a pure function of k (exact resume).
    """

    def __init__(self, dataset_size: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n = dataset_size
        self.global_batch = global_batch
        self.seed = seed
        self.local = slice(rank * global_batch // world_size, (rank + 1) * global_batch // world_size)
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def __call__(self, k: int) -> torch.Tensor:
        positions = torch.arange(k * self.global_batch, (k + 1) * self.global_batch)[self.local]
        epochs = positions // self.n
        out = torch.empty_like(positions)
        for epoch in epochs.unique().tolist():
            mask = epochs == epoch
            out[mask] = self._permutation(epoch)[positions[mask] % self.n]
        return out


def indexed_batches(dataset: ImageDataset, global_batch: int, seed: int, rank: int = 0, world_size: int = 1):
    """k -> this rank's slice of global batch k of an in-memory dataset."""
    indices = BatchIndices(len(dataset), global_batch, seed, rank, world_size)
    return lambda k: dataset.batch(indices(k))
