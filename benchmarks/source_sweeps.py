"""The five source projects' experiments as raygan sweeps: which settings the health monitor flags and
which win. Runs each sweep of tune_configs/ (one after another; about 75 minutes on 2 cores in all) and
prints one markdown table per sweep, trials best FID first.

    .venv/bin/python benchmarks/source_sweeps.py --run                # run all six, then tabulate
    .venv/bin/python benchmarks/source_sweeps.py --run --only losses  # one of them
    .venv/bin/python benchmarks/source_sweeps.py                      # tabulate sweeps already run

A sweep already finished (its summary.json exists) is not run again; `--storage` is where they live.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SWEEPS = {
    "activations": "Anime faces: ReLU vs LeakyReLU in G",
    "thresholds": "Anime faces: D / G updated only above a loss threshold",
    "cgan": "Dog images: conditional GAN, label flipping and smoothing",
    "losses": "GAN + WGAN: discriminator, clipped critic, gradient penalty, both",
    "mri_dropout": "Brain MRI: D dropout x BatchNorm momentum",
    "optimizers_layers": "CelebA faces: SGD vs Adam per network, 2-4 layers",
}
ROOT = Path(__file__).resolve().parent.parent


def experiment_folder(storage: Path, name: str) -> Path:
    return storage / f"source-{name}"


def run_sweep(storage: Path, name: str) -> None:
    if (experiment_folder(storage, name) / "summary.json").exists():
        print(f"{name}: already run ({experiment_folder(storage, name)})", flush=True)
        return
    command = [
        sys.executable,
        "-m",
        "raygan.tune",
        str(ROOT / "tune_configs" / f"{name}.yaml"),
        "--name",
        f"source-{name}",
        "--storage",
        str(storage),
    ]
    print(f"{name}: {' '.join(command)}", flush=True)
    subprocess.run(command, check=True)


def last_metrics(run: Path) -> dict:
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
    evaluated = [json.loads(line) for line in lines if '"health"' in line]
    return evaluated[-1] if evaluated else {}


def flags_raised(health: dict) -> str:
    events = health.get("events") or []
    return "; ".join(f"{e['condition'].replace('_', ' ')} @{e['step']}: {e['detail']}" for e in events) or "none"


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its shortest suffix no other key ends with: optim.g.name -> g.name."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if sum(other == suffix or other.endswith("." + suffix) for other in keys) == 1:
                break
        names[key] = suffix
    return names


def table(storage: Path, name: str) -> str:
    folder = experiment_folder(storage, name)
    rows = json.loads((folder / "summary.json").read_text())
    searched = [
        key
        for key in rows[0]
        if key not in ("trial", "best_fid", "best_step", "last_step", "health", "stop_reason", "best_checkpoint")
    ]
    label = short_names(searched)
    header = [
        "setting",
        "best FID (step)",
        "steps run",
        "flags raised (first step)",
        "health at end",
        "modes, diversity at end",
    ]
    lines = [f"**{name}** ({SWEEPS[name]})", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(rows):
        last = last_metrics(folder / "runs" / row["trial"])
        health = last.get("health") or {}
        setting = ", ".join(f"{label[key]} {row[key]}" for key in searched)
        fid = "-" if row["best_fid"] is None else f"{row['best_fid']:.2f} ({row['best_step']})"
        coverage = (
            f"{last['modes_covered']}/{last['modes_total']}, {last['diversity']:.2f}"
            if "modes_covered" in last
            else "-"
        )
        mark = " **(winner)**" if i == 0 and row["best_fid"] is not None else ""
        lines.append(
            f"| {setting}{mark} | {fid} | {row['last_step']} | {flags_raised(health)} | "
            f"{health.get('status', '-')} | {coverage} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the sweeps not yet run")
    parser.add_argument("--only", nargs="+", choices=list(SWEEPS), default=list(SWEEPS))
    parser.add_argument("--storage", default="~/raygan_results")
    args = parser.parse_args()
    storage = Path(args.storage).expanduser()
    for name in args.only:
        if args.run:
            run_sweep(storage, name)
    for name in args.only:
        if (experiment_folder(storage, name) / "summary.json").exists():
            print(table(storage, name) + "\n")
        else:
            print(f"{name}: not run yet (--run)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
