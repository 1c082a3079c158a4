"""Checkpoint folders: full training state for resuming, a small generator export for sampling.

    checkpoint_0000250/
        state.pt        G, D / critic, G_ema, optimizers, grad scalers, step, skip counters
        generator.pt    the sampling generator's weights only (G_ema when EMA is on)
        config.json     the resolved config the run was started with
        meta.json       step and the metrics reported with this checkpoint; fid null when it was
                        taken without an evaluation (unscored: never the best)
        grid.png        the fixed-latent sample grid (checkpoints taken at an evaluation)
        manifest.json   every other file's size; uploaded last, so a checkpoint is complete only when
                        it is there and every size matches (an upload cut short never loads as valid)

Everything is read with `torch.load(weights_only=True)`: a crafted pickle cannot run code, it is
rejected as bad input. Randomness needs no saved state: each step seeds its generators from
(seed, step), so the step number alone restores it. Paths may be local folders or s3:// URIs.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raygan import storage
from raygan.config import Config, build_config
from raygan.errors import UserError, first_line

STATE, GENERATOR, CONFIG, META, GRID = "state.pt", "generator.pt", "config.json", "meta.json", "grid.png"
MANIFEST = "manifest.json"
RUN_MARKERS = ("metrics.jsonl", "checkpoint_manager_snapshot.json")  # files only a training run writes
SWEEP_RUNS = "runs"  # a sweep's experiment folder keeps its trials' runs here (raygan.tune writes them)


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:07d}"


def write_checkpoint(
    folder: Path,
    engine,
    cfg: Config,
    meta: dict[str, Any],
    extra_state: dict | None = None,
    grid_png: bytes | None = None,
) -> Path:
    """`extra_state` joins the engine's state in state.pt (the health monitor's history, say)."""
    folder.mkdir(parents=True, exist_ok=True)
    _save({**engine.state_dict(), **(extra_state or {})}, folder / STATE)
    _save(engine.sampler.state_dict(), folder / GENERATOR)
    (folder / CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2))
    shape = {"step": engine.step, "channels": engine.channels, "num_classes": engine.num_classes, "fid": None}
    (folder / META).write_text(json.dumps({**shape, **meta}, indent=2, default=float))
    if grid_png is not None:
        (folder / GRID).write_bytes(grid_png)
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps(sizes, indent=2))
    return folder


def _save(obj: Any, path: Path) -> None:
    """torch.save through bytes: a full disk is then an OSError that says so (ENOSPC), not torch's
    "PytorchStreamWriter failed writing file"."""
    data = io.BytesIO()
    torch.save(obj, data)
    path.write_bytes(data.getbuffer())


def upload_order(folder: Path) -> list[Path]:
    """The checkpoint's files with the manifest last: it marks the upload complete."""
    return sorted(folder.iterdir(), key=lambda p: (p.name == MANIFEST, p.name))


def safe_load(source: Path | str | bytes, name: str | None = None) -> Any:
    """torch.load that only accepts tensors and plain containers; anything else is bad input."""
    name = name or str(source)
    try:
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        return torch.load(stream, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise UserError(f"{name}: not a loadable raygan checkpoint file ({first_line(e)})") from None


def _read(checkpoint: str, name: str) -> bytes:
    data = storage.read_bytes(storage.join(checkpoint, name))
    if data is None:
        raise UserError(f"{checkpoint}: not a raygan checkpoint (no {name})")
    return data


def read_config(checkpoint: str) -> Config:
    path = storage.join(str(checkpoint), CONFIG)
    try:
        return build_config(json.loads(_read(str(checkpoint), CONFIG)))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg})") from None


def read_meta(checkpoint: str) -> dict[str, Any]:
    data = storage.read_bytes(storage.join(str(checkpoint), META))
    return json.loads(data) if data else {}


def is_complete(checkpoint: str) -> bool:
    """Every file named in the manifest is there with its recorded size."""
    manifest = storage.read_bytes(storage.join(checkpoint, MANIFEST))
    if manifest is None:
        return False
    try:
        expected = json.loads(manifest)
    except json.JSONDecodeError:
        return False
    present = storage.sizes(checkpoint)
    return all(present.get(name) == size for name, size in expected.items())


def list_checkpoints(run: str | Path, complete_only: bool = True) -> list[str]:
    """Checkpoint folders of a run, oldest step first (complete ones only, unless asked)."""
    run = str(run)
    names = sorted(
        n for n, size in storage.sizes(run, files_only=False).items() if n.startswith("checkpoint_") and size < 0
    )
    found = [storage.join(run, n) for n in names]
    return [c for c in found if is_complete(c)] if complete_only else found


def best_checkpoint(run: str | Path) -> str | None:
    """The complete checkpoint with the lowest FID; the latest where none is scored (has an FID) yet."""
    return best_of(list_checkpoints(run))


def best_of(checkpoints: list[str]) -> str | None:
    """The checkpoint with the lowest FID; the last where none is scored (has an FID) yet."""
    if not checkpoints:
        return None
    scored = [(read_meta(c).get("fid"), c) for c in checkpoints]
    scored = [(fid, c) for fid, c in scored if fid is not None]
    return min(scored, key=lambda item: item[0])[1] if scored else checkpoints[-1]


def is_checkpoint_or_run(path: str) -> bool:
    """Whether `path` (local or a URI) looks like a checkpoint or a run folder."""
    try:
        names = storage.sizes(storage.expand(path), files_only=False)
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError: not a URI it knows
        return False
    return GENERATOR in names or MANIFEST in names or any(n.startswith("checkpoint_0") for n in names)


def resolve_checkpoint(path: str) -> str:
    """A complete checkpoint, a run's best one, or a sweep's best (its trials' best checkpoint with the
    lowest FID); UserError naming the path otherwise."""
    storage.check_uri(path)
    path = storage.expand(str(path))
    try:
        names = storage.sizes(path, files_only=False)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({first_line(e)})") from None
    if not names:
        raise UserError(f"{path}: no such checkpoint or run")
    if GENERATOR in names or MANIFEST in names:
        if not is_complete(path):
            raise UserError(f"{path}: incomplete checkpoint (an upload was cut short; use an earlier one)")
        return path
    best = best_checkpoint(path)
    if best is None and SWEEP_RUNS in names:
        runs = find_runs(storage.join(path, SWEEP_RUNS), depth=1)
        best = best_of([c for run in runs for c in list_checkpoints(run)])
    if best is None:
        raise UserError(f"{path}: neither a checkpoint nor a run or sweep with complete checkpoints")
    return best


def find_runs(uri: str, depth: int = 3) -> list[str]:
    """Training runs at or under `uri` (a run, an experiment, a storage root), in name order."""
    names = storage.sizes(uri, files_only=False)
    if any(name in names for name in RUN_MARKERS):
        return [uri]
    if depth == 0:
        return []
    folders = [n for n, size in names.items() if size < 0 and not n.startswith((".", "checkpoint_", "trial_"))]
    return [run for n in sorted(folders) for run in find_runs(storage.join(uri, n), depth - 1)]


def pull(source: str, dest: str) -> Path:
    """Copy a checkpoint (or a run's best) to the local folder DEST/<checkpoint name>; verified."""
    import pyarrow.fs

    checkpoint = resolve_checkpoint(source)
    name = storage.basename(checkpoint) if storage.is_uri(checkpoint) else Path(checkpoint).resolve().name  # a/b/..
    target = Path(dest).expanduser() / storage.check_name(name, source)
    target.mkdir(parents=True, exist_ok=True)
    fs, path = storage.filesystem(checkpoint)
    pyarrow.fs.copy_files(
        path, str(target.resolve()), source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem()
    )
    if not is_complete(str(target)):
        raise RuntimeError(f"{checkpoint}: the copy in {target} does not match its manifest")
    return target


def load_generator(path: str, device: str = "cpu") -> tuple[nn.Module, Config, dict]:
    """(generator in eval mode, its config, its meta.json plus `checkpoint`) from a checkpoint or run."""
    from raygan.models import build_generator

    checkpoint = resolve_checkpoint(path)
    cfg = read_config(checkpoint)
    meta = read_meta(checkpoint)
    channels, num_classes = meta.get("channels"), meta.get("num_classes")
    if channels is None or num_classes is None:
        raise UserError(f"{storage.join(checkpoint, META)}: missing channels / num_classes")
    G = build_generator(cfg, channels, num_classes)
    weights = storage.join(checkpoint, GENERATOR)
    try:
        G.load_state_dict(safe_load(_read(checkpoint, GENERATOR), weights))
    except (RuntimeError, KeyError) as e:
        raise UserError(f"{weights}: weights do not fit the checkpoint's config ({e})") from None
    return G.to(device).eval(), cfg, {**meta, "checkpoint": checkpoint}
