"""The `raygan` command: parse, validate, call the library.

    raygan train tune_configs/smoke.yaml --set train.steps=200 --name smoke --json
    raygan sample ~/raygan_results/smoke --num 64 --out samples
    raygan sample ~/raygan_results/smoke --num 16 --interpolate 6 --truncation 0.8 --out walk
    raygan fid --real digits --fake digits:test --json
    raygan bench tune_configs/smoke.yaml --steps 20 --workers 2 --json
    raygan export ~/raygan_results/smoke --format onnx --out G.onnx
    raygan serve ~/raygan_results/smoke --port 8000

Exit status: 0 success; 2 bad input (one `error: ...` line on stderr, nothing started or written);
1 a failure at run time.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from raygan.config import Config, load_config
from raygan.errors import RunFailure, UserError
from raygan.tracking import check_packages

STARTED_AT = time.time()  # "launch to first training step" is measured from here


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments in raygan's one-line form."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")


def _common_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.steps=100 (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="raygan", description="GANs on Ray Train, FID-driven sweeps on Ray Tune.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    train = commands.add_parser("train", help="one data-parallel training run on Ray Train")
    _common_config_args(train)
    train.add_argument("--name", help="run name; the same name and storage resumes (default: CONFIG-TIME)")
    train.add_argument("--storage", help="where runs live: a folder or s3://bucket/prefix (storage.path)")
    train.add_argument("--dry-run", action="store_true", help="validate, print the resolved config, start nothing")

    tune = commands.add_parser("tune", help="a Ray Tune sweep over tune.search_space, objective FID (min)")
    _common_config_args(tune)
    tune.add_argument("--name", help="experiment name (default: CONFIG-TIME); with --resume, the one to continue")
    tune.add_argument("--storage", help="where experiments live: a folder or s3://bucket/prefix (storage.path)")
    tune.add_argument("--resume", action="store_true", help="continue an interrupted sweep; finished trials stay")
    tune.add_argument("--dry-run", action="store_true", help="validate, print the resolved config, start nothing")

    sample = commands.add_parser("sample", help="images from a checkpoint or a run's best checkpoint")
    sample.add_argument("checkpoint", help="checkpoint folder or run folder")
    sample.add_argument(
        "--num",
        type=int,
        help="number of images (default 64); with --grid-classes, images per "
        "class (default 8); with --interpolate, walks side by side (default 16)",
    )
    sample.add_argument("--label", type=int, help="class to draw (conditional models); default: all classes in turn")
    sample.add_argument(
        "--grid-classes", action="store_true", help="conditional models: a row per class, the columns sharing a latent"
    )
    sample.add_argument(
        "--truncation",
        type=float,
        default=1.0,
        metavar="PSI",
        help="0 < PSI <= 1: latents times PSI, toward the mean latent (1: plain sampling)",
    )
    sample.add_argument(
        "--interpolate",
        type=int,
        metavar="K",
        help="write OUT.gif instead: each image's latent walks through K keyframes (slerp) and back",
    )
    sample.add_argument(
        "--frames", type=int, help="with --interpolate: frames from one keyframe to the next (default 16)"
    )
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument(
        "--out", required=True, help="writes OUT.png (grid) and OUT.npz (images, labels); with --interpolate, OUT.gif"
    )

    export = commands.add_parser("export", help="the sampling generator as a file that loads without raygan")
    export.add_argument(
        "checkpoint", metavar="CHECKPOINT_OR_RUN", help="checkpoint or run folder (its best), local or s3://"
    )
    export.add_argument(
        "--format",
        required=True,
        choices=["torchscript", "onnx"],
        help="torchscript (torch.jit.load) or onnx (onnxruntime)",
    )
    export.add_argument("--out", required=True, help="the file to write, local or s3://")
    export.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")

    fid = commands.add_parser("fid", help="FID / KID / precision, recall, density, coverage between two image sources")
    fid.add_argument(
        "--real",
        required=True,
        metavar="SPEC",
        help="digits, digits:test, stacked-digits[:test], a folder, an .npz, or a checkpoint/run",
    )
    fid.add_argument("--fake", required=True, metavar="SPEC", help="same kinds as --real")
    fid.add_argument(
        "--features",
        help="digits | emoji | inception | a TorchScript file "
        "(default: a checkpoint's eval.features, emoji for emoji, else digits)",
    )
    fid.add_argument("--inception-weights", help="local InceptionV3 weights (features inception)")
    fid.add_argument("--num", type=int, help="images per side (default: all; 2000 samples from a checkpoint)")
    fid.add_argument("--json", action="store_true")

    checkpoints = commands.add_parser("checkpoints", help="list or fetch checkpoints, local or in object storage")
    actions = checkpoints.add_subparsers(dest="action", required=True, parser_class=ArgumentParser)
    listing = actions.add_parser("list", help="runs, checkpoints, step, FID, which is best, size")
    listing.add_argument("uri", help="a run, an experiment or a storage root (folder or s3://...)")
    listing.add_argument("--json", action="store_true")
    pulling = actions.add_parser("pull", help="copy a checkpoint (a run's best, or a named one) to a local folder")
    pulling.add_argument("uri", help="a checkpoint, or a run (its best checkpoint)")
    pulling.add_argument("dest", help="local folder; the checkpoint lands in DEST/<checkpoint name>")

    bench = commands.add_parser("bench", help="time the real training step on Ray Train workers")
    _common_config_args(bench)
    bench.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    bench.add_argument("--workers", type=int, help="override scaling.num_workers")

    serving = commands.add_parser("serve", help="the generator on Ray Serve: an HTTP API and a web page, until Ctrl-C")
    serving.add_argument(
        "checkpoint",
        metavar="CHECKPOINT_OR_RUN_OR_EXPERIMENT",
        help="a checkpoint, a run (its best) or a sweep (its best trial's best), local or s3://",
    )
    serving.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    serving.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default loopback; 0.0.0.0: every interface)"
    )
    serving.add_argument("--replicas", type=int, default=1, help="copies of the generator (default 1)")
    serving.add_argument(
        "--max-replicas", type=int, help="autoscale between --replicas and this many copies as the load asks"
    )
    serving.add_argument("--max-n", type=int, help="most images one /sample request may ask for (default 256)")
    serving.add_argument(
        "--batch", type=int, help="concurrent /sample requests drawn in one forward (default 8; 1: no batching)"
    )

    report = commands.add_parser("report", help="curves, grids and a progress GIF of a run; a sweep's trials")
    report.add_argument(
        "path", metavar="RUN_OR_EXPERIMENT", help="a run or a sweep's experiment folder, local or s3://"
    )
    report.add_argument("--out", required=True, help="folder for index.html and the figures (created)")
    report.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    return parser


def _load(args, extra: dict | None = None) -> Config:
    overrides = list(args.overrides)
    if getattr(args, "storage", None):
        overrides.append(f"storage.path={json.dumps(args.storage)}")
    for key, value in (extra or {}).items():
        overrides.append(f"{key}={json.dumps(value)}")
    cfg = load_config(args.config, overrides)
    storage_root(cfg)  # a malformed storage URI is bad input, even for --dry-run
    return cfg


def storage_root(cfg: Config) -> str:
    """storage.path as Ray wants it: URIs unchanged, local folders absolute."""
    from raygan import storage

    return storage.root(cfg.storage.path)


def _print_json(obj: dict) -> None:
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    print(json.dumps({k: clean(v) for k, v in obj.items()}), flush=True)


def _run_name(args) -> str:
    """--name, or CONFIG-TIME so that a new run never resumes an old one by accident; one folder either way."""
    from raygan.storage import check_name

    if args.name is not None:
        return check_name(args.name, "--name")
    return check_name(
        f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}", f"--name (default from {args.config})"
    )


def _print_resolved(cfg: Config) -> int:
    """--dry-run: the resolved config as YAML; nothing is started."""
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0


def cmd_train(args) -> int:
    cfg = _load(args)
    check_packages(cfg.logging)
    name = _run_name(args)
    if args.dry_run:
        return _print_resolved(cfg)
    from ray.train import TrainingFailedError

    from raygan import storage
    from raygan.run_lock import RunLock
    from raygan.train.loop import format_timing
    from raygan.train.ray_train import fit
    from raygan.train.reports import checkpoint_uri, result_best_checkpoint, result_report

    _preflight(cfg)
    root = storage_root(cfg)
    try:
        with RunLock(storage.join(root, name), "--name", "raygan train"):
            result = fit(cfg, name, root, started_at=STARTED_AT)
    except TrainingFailedError as e:
        print(f"error: run {name} failed: {e}", file=sys.stderr)
        return 1
    metrics = result_report(result) or {}
    run = storage.join(root, name)
    latest = checkpoint_uri(result.checkpoint) if result.checkpoint else None
    best = result_best_checkpoint(result)
    health = metrics.get("health") or {}
    print(f"run: {run}")
    print(f"checkpoints: {latest}" + ("" if best == latest else f" (best: {best})"))
    if metrics.get("best_fid") is not None:
        print(
            f"best FID {metrics['best_fid']:.3f} at step {metrics.get('best_step')}; health: {health.get('status')}"
            + (f"; stopped: {health['stop_reason']}" if health.get("stop_reason") else "")
        )
    if result.return_value:
        print(format_timing(result.return_value))
    if args.json:
        _print_json(
            {
                "run": run,
                "step": metrics.get("step"),
                "fid": metrics.get("fid"),
                "best_fid": metrics.get("best_fid"),
                "best_checkpoint": best,
                "health": metrics.get("health"),
            }
        )
    return 0


def cmd_tune(args) -> int:
    from raygan.tune.sweep import run_sweep, validate_sweep

    cfg = _load(args)
    check_packages(cfg.logging)
    validate_sweep(cfg)
    if args.resume and args.name is None:
        raise UserError("--resume: needs --name of the experiment to continue")
    name = _run_name(args)
    if args.dry_run:
        return _print_resolved(cfg)
    _preflight(cfg)
    root = storage_root(cfg)
    from ray.tune import Tuner

    from raygan import storage
    from raygan.run_lock import RunLock
    from raygan.tune.summary import CONSOLE_COLUMNS
    from raygan.tune.sweep import restore_args

    if args.resume and not Tuner.can_restore(**restore_args(storage.join(root, name))):
        raise UserError(f"--resume: no experiment {name} under {root}")
    with RunLock(storage.join(root, name), "--name", "raygan tune"):
        result = run_sweep(cfg, name, root, resume=args.resume)
    columns = ["trial", *result["searched"], *CONSOLE_COLUMNS]
    print(format_table(result["rows"], columns))
    print(f"experiment: {result['experiment']} (summary.csv, summary.json)")
    if result["best_fid"] is not None:
        print(
            f"best FID {result['best_fid']:.3f} with {result['best_config']}; checkpoint: {result['best_checkpoint']}"
        )
    if args.json:
        _print_json({k: result[k] for k in ("experiment", "trials", "best_config", "best_fid", "best_checkpoint")})
    if result["trials"] and result["failed"] == result["trials"]:
        print(f"error: every trial failed; the first: {result['first_error']}", file=sys.stderr)
        return 1
    return 0


def _preflight(cfg: Config) -> None:
    """Bad input that only shows on opening a file or a bucket, caught before Ray starts."""
    from raygan import storage, tracking
    from raygan.data import check_source
    from raygan.metrics.features import load_extractor

    storage.check_writable(storage_root(cfg))
    tracking.preflight(cfg.logging)
    channels = check_source(cfg.data)
    load_extractor(cfg.eval.features, channels, cfg.eval.inception_weights)  # a TorchScript file is run once


def cmd_sample(args) -> int:
    from raygan import sampling
    from raygan.checkpoint import load_generator
    from raygan.images import generate, save_grid

    _check_sample_args(args)
    G, cfg, meta = load_generator(args.checkpoint)
    num_classes = meta["num_classes"] if cfg.model.conditional else 0
    if num_classes and args.label is not None and not 0 <= args.label < num_classes:
        raise UserError(f"--label: {args.label} is outside 0..{num_classes - 1}")
    for flag, given in (("--label", args.label is not None), ("--grid-classes", args.grid_classes)):
        if given and not num_classes:
            raise UserError(f"{flag}: {meta['checkpoint']} is not a conditional model")
    default = sampling.GRID_CLASS_COLUMNS if args.grid_classes else sampling.WALKS if args.interpolate else 64
    num = args.num or default
    out = Path(args.out)
    if out.suffix in (".png", ".npz", ".gif"):
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.interpolate:
        keyframes = sampling.draw_latents(num, cfg.model.latent_dim, args.seed, args.truncation, args.interpolate)
        walk = sampling.write_walk(
            G,
            keyframes,
            out.with_suffix(".gif"),
            num_classes,
            args.label,
            args.grid_classes,
            args.frames or sampling.FRAMES_PER_SEGMENT,
        )
        print(
            f"wrote {out.with_suffix('.gif')} ({walk['frames']} frames of {walk['width']}x{walk['height']}, "
            f"{args.interpolate} keyframes, from {meta['checkpoint']})"
        )
        return 0
    z, labels, nrow = sampling.still_inputs(
        num, cfg.model.latent_dim, args.seed, args.truncation, num_classes, args.label, args.grid_classes
    )
    images = generate(G, z, labels)
    sampling.save_npz(out.with_suffix(".npz"), images, labels)
    save_grid(images, out.with_suffix(".png"), nrow=nrow)
    written = f"{out.with_suffix('.png')} and {out.with_suffix('.npz')}"
    print(f"wrote {written} ({len(images)} images from {meta['checkpoint']})")
    return 0


def _check_sample_args(args) -> None:
    """Bad numbers and contradictions, caught before the checkpoint is read."""
    if args.num is not None and args.num < 1:
        raise UserError(f"--num: must be at least 1, got {args.num}")
    if not 0 < args.truncation <= 1:
        raise UserError(f"--truncation: must be in (0, 1], got {args.truncation}")
    if args.interpolate is not None and args.interpolate < 2:
        raise UserError(f"--interpolate: needs at least 2 keyframes, got {args.interpolate}")
    if args.frames is not None and (args.interpolate is None or args.frames < 1):
        raise UserError(f"--frames: needs --interpolate and at least 1 frame, got {args.frames}")
    if args.grid_classes and args.label is not None:
        raise UserError("--grid-classes: draws every class; leave out --label")


def cmd_export(args) -> int:
    from raygan.export import export_generator

    result = export_generator(args.checkpoint, args.format, args.out)
    labels = f"{result['num_classes']} labels" if result["num_classes"] else "unconditional"
    print(
        f"wrote {result['out']} ({args.format}, {result['bytes'] / 1e6:.1f} MB, {result['seconds']:.1f} s) from "
        f"{result['checkpoint']}: z of {result['latent_dim']}, {labels}, "
        f"{result['channels']}x{result['image_size']}x{result['image_size']} images in [-1, 1]"
    )
    if args.json:
        _print_json(result)
    return 0


def cmd_checkpoints(args) -> int:
    from raygan import checkpoint, storage

    if args.action == "pull":
        target = checkpoint.pull(args.uri, args.dest)
        print(f"pulled {target} ({sum(p.stat().st_size for p in target.iterdir()) / 1e6:.1f} MB)")
        return 0
    storage.check_uri(args.uri)
    rows = checkpoint_rows(args.uri)
    if not rows:
        raise UserError(f"{args.uri}: no runs with checkpoints there")
    shown = [
        {
            **row,
            "fid": "unscored" if row["fid"] is None else row["fid"],
            "best": "*" if row["best"] else "",
            "complete": "yes" if row["complete"] else "NO",
        }
        for row in rows
    ]
    print(format_table(shown, ["run", "checkpoint", "step", "fid", "best", "size_mb", "complete"]))
    if args.json:
        print(json.dumps({"checkpoints": rows}))
    return 0


def checkpoint_rows(uri: str) -> list[dict[str, Any]]:
    """One row per checkpoint of every run at or under `uri`; `best` marks each run's lowest FID."""
    from raygan import checkpoint, storage

    root = storage.expand(uri)
    rows = []
    for run in checkpoint.find_runs(root):
        best = checkpoint.best_checkpoint(run)
        for path in checkpoint.list_checkpoints(run, complete_only=False):
            meta = checkpoint.read_meta(path)
            rows.append(
                {
                    "run": run,
                    "checkpoint": storage.basename(path),
                    "step": meta.get("step"),
                    "fid": meta.get("fid"),
                    "best": path == best,
                    "size_mb": round(sum(storage.sizes(path).values()) / 1e6, 2),
                    "complete": checkpoint.is_complete(path),
                }
            )
    return rows


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows as text columns under a header line: floats to 4 significant digits, None as `-`."""

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "-" if value is None else str(value)

    table = [columns] + [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in table)


def cmd_bench(args) -> int:
    if args.steps < 1:
        raise UserError(f"--steps: must be at least 1, got {args.steps}")
    extra = {} if args.workers is None else {"scaling.num_workers": args.workers}
    cfg = _load(args, extra)
    import tempfile

    from raygan.data import check_source

    check_source(cfg.data)

    from raygan.train.bench import bench

    with tempfile.TemporaryDirectory(prefix="raygan-bench-") as storage:
        result = bench(cfg, args.steps, storage, name="bench", started_at=STARTED_AT)
    print(
        f"{result['workers']} worker(s): {result['images_per_s']:.1f} images/s, "
        f"{result['step_s'] * 1000:.1f} ms/step, G {result['params_G']:,} / D {result['params_D']:,} parameters; "
        f"first step {result['startup_s']:.1f} s after launch"
    )
    if args.json:
        _print_json({k: result[k] for k in ("images_per_s", "step_s", "params_G", "params_D", "workers", "startup_s")})
    return 0


def cmd_fid(args) -> int:
    from raygan.compare import fid_between

    if args.num is not None and args.num < 2:
        raise UserError(f"--num: must be at least 2, got {args.num}")
    result = fid_between(args.real, args.fake, args.features, args.num, args.inception_weights)
    print(f"FID {result['fid']:.3f}  KID {result['kid']:.5f} +- {result['kid_std']:.5f}  MiFID {result['mifid']:.3f}")
    print(
        f"precision {result['precision']:.3f}  recall {result['recall']:.3f}  density {result['density']:.3f}  "
        f"coverage {result['coverage']:.3f}  ({result['prdc_samples']} images per side, k=5)"
    )
    print(f"  real: {result['real']}\n  fake: {result['fake']}")
    if args.json:
        keys = (
            "fid",
            "kid",
            "kid_std",
            "mifid",
            "precision",
            "recall",
            "density",
            "coverage",
            "prdc_samples",
            "num_real",
            "num_fake",
        )
        _print_json({k: result[k] for k in keys})
    return 0


def cmd_report(args) -> int:
    from raygan.report import write_report

    result = write_report(args.path, args.out)
    top = [name for name in result["files"] if "/" not in name]
    trials = {name.split("/")[1] for name in result["files"] if name.startswith("trials/")}
    print(
        f"wrote {len(result['files'])} files to {result['out']}: {', '.join(top)}"
        + (f", and a report per trial in trials/ ({len(trials)} trials)" if trials else "")
    )
    print(f"open {result['out']}/index.html")
    if args.json:
        _print_json(result)
    return 0


def cmd_serve(args) -> int:
    from raygan.serve import serve_checkpoint

    serve_checkpoint(
        args.checkpoint,
        args.host,
        args.port,
        args.replicas,
        args.max_n,
        args.batch,
        args.max_replicas,
        announce=lambda line: print(line, flush=True),  # a script waiting for the URL sees it at once
    )
    print("stopped", flush=True)
    return 0


COMMANDS = {
    "checkpoints": cmd_checkpoints,
    "train": cmd_train,
    "tune": cmd_tune,
    "sample": cmd_sample,
    "fid": cmd_fid,
    "bench": cmd_bench,
    "report": cmd_report,
    "export": cmd_export,
    "serve": cmd_serve,
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunFailure as e:  # a full disk, say: nothing wrong with the input, the run could not go on
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
