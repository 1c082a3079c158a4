"""What a run leaves for people next to its checkpoints (rank 0 writes it, to any storage URI).

    RUN/metrics.jsonl                 one JSON object per report: losses, images/s, and at evaluations
                                      FID, KID, mode coverage, health flags
    RUN/grids/step_0000250.png        the fixed-latent grid at each evaluation (a row per class if conditional)
    RUN/tensorboard/events.out.*      the same scalars and grids for TensorBoard

Storage may be briefly unreachable (an S3 outage): a failed write is kept and retried at the next
report, and training goes on. A full disk is not waited for: StorageFull stops the run (every file is
written whole or not at all, so what is there stays readable). `raygan report` reads these files.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from raygan import storage
from raygan.config import Config
from raygan.errors import first_line
from raygan.images import png_bytes
from raygan.train.train_report import TrainReport

METRICS, GRIDS, TENSORBOARD = "metrics.jsonl", "grids", "tensorboard"
GRID_COLUMNS = 8
GRID_SEED = 20_240_602  # the same grid latents in every run, so grids compare across trials


def grid_name(step: int) -> str:
    return f"step_{step:07d}.png"


def grid_latents(cfg: Config, num_classes: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """(z, labels, images per row): 8 x 8 samples, or one row of 8 per class for conditional models."""
    rows = num_classes if cfg.model.conditional else GRID_COLUMNS
    z = torch.randn(rows * GRID_COLUMNS, cfg.model.latent_dim, generator=torch.Generator().manual_seed(GRID_SEED))
    labels = torch.arange(rows).repeat_interleave(GRID_COLUMNS) if cfg.model.conditional else None
    return z, labels, GRID_COLUMNS


# runs written before every metric name was lower case read as new ones
RENAMED = {
    "D_loss": "d_loss",
    "D_accuracy": "d_accuracy",
    "D_gp": "d_gp",
    "D_r1": "d_r1",
    "D_r2": "d_r2",
    "lr_G": "lr_g",
    "lr_D": "lr_d",
}


def read_metrics(run_uri: str) -> list[TrainReport]:
    """The run's reports from metrics.jsonl, one per line as rank 0 recorded them."""
    data = storage.read_bytes(storage.join(run_uri, METRICS))
    lines = data.decode().splitlines() if data else []
    return [{RENAMED.get(k, k): v for k, v in json.loads(line).items()} for line in lines if line.strip()]


def _scalars(metrics: dict) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    return out


class RunLog:
    def __init__(self, run_uri: str, resumed_step: int = 0):
        self.run_uri = run_uri
        self.records = [r for r in read_metrics(run_uri) if r.get("step", 0) <= resumed_step]  # drop redone steps
        self.pending: dict[str, bytes] = {}  # storage path -> content not yet written
        self._tb_dir = tempfile.mkdtemp(prefix="raygan-tb-")
        self._tb = None
        self._warned = False

    def record(self, metrics: TrainReport, grid: np.ndarray | None = None) -> None:
        step = int(metrics["step"])
        self.records.append(metrics)
        lines = "".join(json.dumps(r, default=float) + "\n" for r in self.records)
        self.pending[storage.join(self.run_uri, METRICS)] = lines.encode()
        writer = self._tensorboard()
        if writer is not None:
            for key, value in _scalars(metrics).items():
                writer.add_scalar(key, value, step)
        if grid is not None:
            self.pending[storage.join(self.run_uri, GRIDS, grid_name(step))] = png_bytes(grid)
            if writer is not None:
                writer.add_image("samples", grid, step, dataformats="HWC")
        if writer is not None:
            writer.flush()
            for events in Path(self._tb_dir).iterdir():
                self.pending[storage.join(self.run_uri, TENSORBOARD, events.name)] = events.read_bytes()
        self.flush()

    def flush(self) -> bool:
        """Write what is pending; on a storage error keep it for the next call. True when all is written.
        StorageFull (a full disk) goes up: it is no outage that passes."""
        for uri in list(self.pending):
            try:
                storage.write_bytes(uri, self.pending[uri])
            except OSError as e:
                if not self._warned:
                    sys.stdout.write(f"warning: storage unreachable, will retry ({first_line(e)[:160]})\n")
                    self._warned = True
                return False
            del self.pending[uri]
        if self._warned:
            sys.stdout.write("storage reachable again: run files written\n")
            self._warned = False
        return True

    def _tensorboard(self):
        if self._tb is None:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:  # TensorBoard files are a convenience, not a requirement
                return None
            self._tb = SummaryWriter(self._tb_dir)
        return self._tb

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        shutil.rmtree(self._tb_dir, ignore_errors=True)
