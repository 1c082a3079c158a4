"""Checkpoint folders: full training state for resuming, a small generator export for sampling.

    checkpoint_000250/
        state.pt        G, D / critic, G_ema, optimizers, grad scalers, step, skip counters
        generator.pt    the sampling generator's weights only (G_ema when EMA is on)
        config.json     the resolved config the run was started with
        meta.json       step and the metrics reported with this checkpoint
        grid.png        the fixed-latent sample grid (checkpoints taken at an evaluation)

Everything is read with `torch.load(weights_only=True)`: a crafted pickle cannot run code, it is
rejected as bad input. Randomness needs no saved state: each step seeds its generators from
(seed, step), so the step number alone restores it.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from raygan.config import Config, build_config
from raygan.errors import UserError

STATE, GENERATOR, CONFIG, META, GRID = "state.pt", "generator.pt", "config.json", "meta.json", "grid.png"


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:07d}"


def write_checkpoint(folder: Path, engine, cfg: Config, meta: dict[str, Any], extra_state: Optional[dict] = None) -> Path:
    """`extra_state` joins the engine's state in state.pt (the health monitor's history, say)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({**engine.state_dict(), **(extra_state or {})}, folder / STATE)
    torch.save(engine.sampler.state_dict(), folder / GENERATOR)
    (folder / CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2))
    shape = {"step": engine.step, "channels": engine.channels, "num_classes": engine.num_classes}
    (folder / META).write_text(json.dumps({**shape, **meta}, indent=2, default=float))
    return folder


def safe_load(path: Path) -> Any:
    """torch.load that only accepts tensors and plain containers; anything else is bad input."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a loadable raygan checkpoint file ({first_line})") from None


def read_config(folder: Path) -> Config:
    path = folder / CONFIG
    if not path.is_file():
        raise UserError(f"{folder}: not a raygan checkpoint (no {CONFIG})")
    try:
        return build_config(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg})") from None


def read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META
    return json.loads(path.read_text()) if path.is_file() else {}


def list_checkpoints(run: Path) -> list[Path]:
    """Checkpoint folders of a run, oldest step first."""
    return sorted(p for p in run.glob("checkpoint_*") if (p / GENERATOR).is_file())


def best_checkpoint(run: Path) -> Optional[Path]:
    """The checkpoint with the lowest FID; the latest where none has an FID yet."""
    checkpoints = list_checkpoints(run)
    if not checkpoints:
        return None
    scored = [(read_meta(c).get("fid"), c) for c in checkpoints]
    scored = [(fid, c) for fid, c in scored if fid is not None]
    return min(scored, key=lambda item: item[0])[1] if scored else checkpoints[-1]


def resolve_checkpoint(path: str) -> Path:
    """A checkpoint folder, or a run folder (its best checkpoint)."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise UserError(f"{path}: no such checkpoint or run")
    if (folder / GENERATOR).is_file():
        return folder
    best = best_checkpoint(folder)
    if best is None:
        raise UserError(f"{path}: neither a checkpoint nor a run with checkpoints")
    return best


def load_generator(path: str, device: str = "cpu") -> tuple[nn.Module, Config, dict]:
    """(generator in eval mode, its config, its meta.json plus `checkpoint`) from a checkpoint or run."""
    from raygan.models import build_generator

    folder = resolve_checkpoint(path)
    cfg = read_config(folder)
    meta = read_meta(folder)
    channels, num_classes = meta.get("channels"), meta.get("num_classes")
    if channels is None or num_classes is None:
        raise UserError(f"{folder / META}: missing channels / num_classes")
    G = build_generator(cfg, channels, num_classes)
    try:
        G.load_state_dict(safe_load(folder / GENERATOR))
    except (RuntimeError, KeyError) as e:
        raise UserError(f"{folder / GENERATOR}: weights do not fit the checkpoint's config ({e})") from None
    return G.to(device).eval(), cfg, {**meta, "checkpoint": str(folder)}
