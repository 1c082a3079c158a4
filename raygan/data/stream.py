"""`data.name: folder` streamed through Ray Data, for folders too large to decode into memory (that is
`raygan.data.read_folder`, the one reader of folders, whose listing and decoding this shares).

    dataset, info = folder_dataset(cfg.data)        # driver: a ray.data.Dataset of images and labels
    TorchTrainer(..., datasets={"train": dataset})   # each worker: ray.train.get_dataset_shard("train")

`data.cache: auto` decodes a folder into memory when its decoded images fit in MEMORY_BUDGET per worker
(200,000 64x64 RGB images are 9.8 GB as float32, so most GAN datasets at 64x64 do): batches are then
indexed by step, so a resume is exact and no CPU goes to Ray Data. Larger folders stream, in an order
that a resume does not repeat.

Works for local folders and any pyarrow filesystem URI (s3://, gs://); the class is the first
sub-folder's name when there are sub-folders. Undecodable files are dropped and counted.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from raygan.config import DataConfig
from raygan.data import FolderInfo, decode_image, folder_filesystem, folder_label, images_to_tensor, list_images

SKIPPED_COLUMN = "skipped"
MEMORY_BUDGET = 4 * 2**30  # bytes of decoded float32 images per worker for data.cache: auto to keep them in memory


class _Decoder:
    """Ray Data batch function: bytes -> fixed-size float images in [-1, 1] and labels."""

    def __init__(self, root: str, class_names: list[str], cfg: DataConfig):
        self.root, self.image_size, self.channels, self.background = root, cfg.image_size, cfg.channels, cfg.background
        self.class_index = {name: i for i, name in enumerate(class_names)}

    def __call__(self, batch: dict) -> dict:
        arrays, labels = [], []
        for data, path in zip(batch["bytes"], batch["path"]):
            array = decode_image(data, self.channels, self.background)
            if array is not None:
                arrays.append(array)
                labels.append(folder_label(path, self.root, self.class_index))
        skipped = np.zeros(len(arrays), dtype=np.int64)
        if arrays:
            skipped[0] = len(batch["bytes"]) - len(arrays)  # counted once per batch
            images = images_to_tensor(arrays, self.image_size).numpy()
        else:
            images = np.zeros((0, self.channels, self.image_size, self.image_size), np.float32)
        return {"image": images, "label": np.asarray(labels, dtype=np.int64), SKIPPED_COLUMN: skipped}


def in_memory(cfg: DataConfig, info: FolderInfo | None = None) -> bool:
    """Whether a folder is decoded into memory (data.cache memory, or auto and it fits) or streamed."""
    if cfg.cache != "auto":
        return cfg.cache == "memory"
    files = (info or list_images(cfg.path)[2]).files
    return files * cfg.channels * cfg.image_size**2 * 4 <= MEMORY_BUDGET


def folder_dataset(cfg: DataConfig):
    """A Ray Data dataset over the images under cfg.path, and what the driver learned listing them."""
    import ray.data

    root, files, info = list_images(cfg.path)
    fs, _ = folder_filesystem(cfg.path)
    # no CPU asked: where the training workers hold every CPU (a 2-core machine), Ray Data's tasks
    # asking for one would wait forever; decoding shares the workers' cores instead
    dataset = ray.data.read_binary_files(files, include_paths=True, filesystem=fs, ray_remote_args={"num_cpus": 0})
    decoder = _Decoder(root, info.class_names, cfg)
    return dataset.map_batches(decoder, batch_format="numpy", batch_size=64, num_cpus=0), info


class StreamedBatches:
    """Endless local batches from a worker's dataset shard, epoch after epoch; counts skipped files."""

    def __init__(self, shard, local_batch: int, seed: int):
        self.shard, self.local_batch, self.seed = shard, local_batch, seed
        self.skipped = 0
        self._iterator: Iterator | None = None

    def _epochs(self):
        while True:
            empty = True
            for batch in self.shard.iter_torch_batches(
                batch_size=self.local_batch,
                drop_last=True,
                local_shuffle_buffer_size=4 * self.local_batch,
                local_shuffle_seed=self.seed,
                device="cpu",
            ):
                empty = False
                self.skipped += int(batch[SKIPPED_COLUMN].sum())
                yield batch["image"], batch["label"]
            if empty:
                raise RuntimeError("the dataset shard holds fewer images than one local batch")

    def __call__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iterator is None:
            self._iterator = self._epochs()
        return next(self._iterator)
