"""raygan export: the files load without raygan and draw what raygan's own sampler draws."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_step import make, run_steps, tiny
from torch import nn

from raygan.checkpoint import GENERATOR, checkpoint_name, write_checkpoint
from raygan.cli import main
from raygan.images import generate
from raygan.train.step import unwrap

# TorchScript and the TorchScript-based ONNX exporter warn that they are deprecated in torch 2.13; the
# contract names both formats, and these tests are what fails first when one stops working
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MODELS = {
    "unconditional-ema": ["train.ema=0.9"],
    "conditional": ["model.conditional=true"],
    "resnet-conditional-ema": ["model.arch=resnet", "model.conditional=true", "train.ema=0.9"],
}
FORMATS = {"torchscript": "pt", "onnx": "onnx"}
BATCH = 5  # not the batch the export traced with (2): the batch axis must be dynamic
STEPS = 3

# Runs in a fresh interpreter that never imports raygan: plain torch and plain onnxruntime
LOADER = """
import json, sys
import numpy as np, onnxruntime, torch

job = json.loads(sys.argv[1])
inputs = np.load(job["inputs"])
images, found = {}, {}
for name, path in job["files"].items():
    if path.endswith(".onnx"):
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
        feeds = {"z": inputs["z"], "labels": inputs["labels"]} if meta["num_classes"] else {"z": inputs["z"]}
        images[name] = session.run(["images"], feeds)[0]
        signature = {"inputs": [[i.name, i.type, i.shape] for i in session.get_inputs()],
                     "outputs": [[o.name, o.type, o.shape] for o in session.get_outputs()]}
    else:
        extra = {"raygan.json": ""}
        G = torch.jit.load(path, _extra_files=extra)
        meta = json.loads(extra["raygan.json"])
        args = [torch.from_numpy(inputs["z"])]
        if meta["num_classes"]:
            args.append(torch.from_numpy(inputs["labels"]))
        images[name] = G(*args).numpy()  # no torch.no_grad(): the file's parameters want no gradients
        signature = {}
    found[name] = {"meta": meta, "signature": signature}
found["raygan imported"] = "raygan" in sys.modules
np.savez(job["images"], **images)
print(json.dumps(found))
"""


@torch.no_grad()
def look_trained(G: nn.Module, z: torch.Tensor, labels) -> None:
    """Give G a trained generator's spread of outputs: a few steps from the start its images lie within
    ~1e-3 of 0, where atol 1e-4 would tell little. BatchNorm statistics of its own, then a last layer
    scaled so that tanh's input has a std of about 1."""
    norms = [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batch below
    g = torch.Generator().manual_seed(1)
    G.train()(
        torch.randn(64, z.shape[1], generator=g), None if labels is None else torch.randint(10, (64,), generator=g)
    )
    G.eval()
    last = [m for m in G.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]
    last.weight.mul_(1.0 / torch.atanh(G(z, labels).clamp(-0.999, 0.999)).std())
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every model trained a few steps, checkpointed, exported in both formats with `raygan export`, and
    loaded back in one subprocess: {"expected": {model: images}, "images": {model/format: images}, ...}."""
    root = tmp_path_factory.mktemp("export")
    z = torch.randn(BATCH, 16, generator=torch.Generator().manual_seed(7))  # tiny() has latent_dim 16
    labels = torch.arange(BATCH) % 10
    expected, engines, checkpoints, files = {}, {}, {}, {}
    for model, overrides in MODELS.items():
        cfg = tiny(*overrides)
        engine, dataset = make(cfg)
        run_steps(engine, dataset, cfg, STEPS)
        look_trained(engine.sampler, z, labels if cfg.model.conditional else None)
        checkpoint = write_checkpoint(root / model / checkpoint_name(STEPS), engine, cfg, {"fid": 1.5})
        expected[model] = generate(engine.sampler, z, labels if cfg.model.conditional else None).numpy()
        engines[model], checkpoints[model] = engine, str(checkpoint)
        for fmt, suffix in FORMATS.items():
            out = root / "files" / f"{model}.{suffix}"
            assert main(["export", str(checkpoint), "--format", fmt, "--out", str(out)]) == 0
            files[f"{model}/{fmt}"] = str(out)
    np.savez(root / "inputs.npz", z=z.numpy(), labels=labels.numpy())
    job = {"inputs": str(root / "inputs.npz"), "images": str(root / "images.npz"), "files": files}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    loaded = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(job)], capture_output=True, text=True, cwd=root, env=env, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    found = json.loads(loaded.stdout.strip().splitlines()[-1])
    images = dict(np.load(root / "images.npz"))
    return {
        "expected": expected,
        "images": images,
        "found": found,
        "engines": engines,
        "checkpoints": checkpoints,
        "z": z,
        "labels": labels,
    }


CASES = [f"{model}/{fmt}" for model in MODELS for fmt in FORMATS]


def test_the_loader_never_imported_raygan(exported):
    assert exported["found"]["raygan imported"] is False


@pytest.mark.parametrize("case", CASES)
def test_the_file_draws_what_the_sampler_draws(exported, case):
    model = case.split("/")[0]
    images = exported["images"][case]
    assert images.shape == (BATCH, 1, 16, 16) and images.dtype == np.float32
    assert exported["expected"][model].std() > 0.3  # spread over [-1, 1], so atol 1e-4 means something
    np.testing.assert_allclose(images, exported["expected"][model], atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_the_metadata_says_how_to_call_it(exported, case):
    model = case.split("/")[0]
    meta = exported["found"][case]["meta"]
    conditional = "model.conditional=true" in MODELS[model]
    assert meta["latent_dim"] == 16 and meta["num_classes"] == (10 if conditional else 0)
    assert meta["channels"] == 1 and meta["image_size"] == 16
    assert meta["output_range"] == [-1.0, 1.0] and meta["output_activation"] == "tanh"
    assert meta["inputs"] == (["z", "labels"] if conditional else ["z"]) and meta["output"] == "images"
    assert meta["ema"] == ("ema" in model) and meta["step"] == STEPS and meta["fid"] == 1.5
    assert meta["checkpoint"] == exported["checkpoints"][model]


@pytest.mark.parametrize("model", MODELS)
def test_onnx_inputs_outputs_and_a_dynamic_batch(exported, model):
    signature = exported["found"][f"{model}/onnx"]["signature"]
    z, *labels = signature["inputs"]
    assert z == ["z", "tensor(float)", ["batch", 16]]
    assert labels == ([["labels", "tensor(int64)", ["batch"]]] if "model.conditional=true" in MODELS[model] else [])
    assert signature["outputs"] == [["images", "tensor(float)", ["batch", 1, 16, 16]]]


def test_the_ema_copy_is_what_is_exported(exported):
    """G and G_ema draw visibly different images here, so the comparison above tells them apart."""
    engine = exported["engines"]["unconditional-ema"]
    assert engine.G_ema is not None and engine.sampler is engine.G_ema
    trained = generate(unwrap(engine.G), exported["z"]).numpy()
    assert np.abs(trained - exported["expected"]["unconditional-ema"]).max() > 0.1


def test_a_run_exports_its_best_checkpoint(tmp_path, capsys):
    cfg = tiny()
    engine, dataset = make(cfg)
    for step, fid in ((1, 2.0), (2, 9.0)):
        run_steps(engine, dataset, cfg, 1)
        write_checkpoint(tmp_path / "run" / checkpoint_name(step), engine, cfg, {"fid": fid})
    assert (
        main(["export", str(tmp_path / "run"), "--format", "torchscript", "--out", str(tmp_path / "G.pt"), "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["checkpoint"] == str(tmp_path / "run" / checkpoint_name(1)) and result["step"] == 1
    assert result["bytes"] == (tmp_path / "G.pt").stat().st_size


def _bad_inputs(tmp_path):
    """(name, argv, what the error line must name); `checkpoint` is a complete one."""
    cfg = tiny()
    engine, _ = make(cfg)
    checkpoint = write_checkpoint(tmp_path / "ckpt", engine, cfg, {})
    cut = write_checkpoint(tmp_path / "cut", engine, cfg, {})
    (cut / GENERATOR).write_bytes((cut / GENERATOR).read_bytes()[:-10])  # an upload cut short
    (tmp_path / "a-file").write_text("")
    out = str(tmp_path / "new" / "G.pt")
    return {
        "missing": (["export", str(tmp_path / "nowhere"), "--format", "onnx", "--out", out], str(tmp_path / "nowhere")),
        "unknown format": (["export", str(checkpoint), "--format", "tflite", "--out", out], "--format"),
        "no format": (["export", str(checkpoint), "--out", out], "--format"),
        "out under a file": (
            ["export", str(checkpoint), "--format", "torchscript", "--out", str(tmp_path / "a-file" / "G.pt")],
            str(tmp_path / "a-file" / "G.pt"),
        ),
        "out is a folder": (
            ["export", str(checkpoint), "--format", "torchscript", "--out", str(tmp_path)],
            str(tmp_path),
        ),
        "incomplete": (["export", str(cut), "--format", "torchscript", "--out", out], str(cut)),
    }


BAD = ["missing", "unknown format", "no format", "out under a file", "out is a folder", "incomplete"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_with_one_line_naming_it(tmp_path, capsys, case):
    argv, named = _bad_inputs(tmp_path)[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and named in err, err
    assert not (tmp_path / "new").exists()  # nothing written, not even the folder


def test_onnx_without_the_onnx_package_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    argv, _ = _bad_inputs(tmp_path)["missing"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --format onnx: needs the onnx package (pip install onnx") and err.count("\n") == 1


def test_export_from_s3_to_s3(s3, tmp_path):
    import onnx

    from raygan.storage import write_bytes

    s3.bucket("raygan-export")
    cfg = tiny("model.conditional=true")
    engine, _ = make(cfg)
    local = write_checkpoint(tmp_path / checkpoint_name(4), engine, cfg, {"fid": 3.0})
    run = "s3://raygan-export/runs/exp1"
    for path in sorted(local.iterdir(), key=lambda p: p.name == "manifest.json"):  # the manifest last
        write_bytes(f"{run}/{local.name}/{path.name}", path.read_bytes())
    out = "s3://raygan-export/exports/G.onnx"
    assert main(["export", run, "--format", "onnx", "--out", out]) == 0
    assert "exports/G.onnx" in s3.keys("raygan-export", "exports/")
    from raygan.storage import read_bytes

    props = {p.key: json.loads(p.value) for p in onnx.load_from_string(read_bytes(out)).metadata_props}
    assert props["checkpoint"] == f"{run}/{local.name}" and props["num_classes"] == 10
