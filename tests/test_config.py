import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from raygan import config
from raygan.config import CHOICES, Config, build_config, load_config, parse_override
from raygan.errors import ConfigError


def test_defaults_validate():
    cfg = build_config({})
    assert cfg == Config()
    assert cfg.optim.g.betas == (0.5, 0.999)


def test_config_is_frozen():
    cfg = build_config({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.steps = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("train.steps=100", "train.steps", 100),
        ("optim.g.lr=1e-4", "optim.g.lr", "1e-4"),  # YAML reads it as a string; the float field converts it
        ("train.d_loss_threshold=null", "train.d_loss_threshold", None),
        ("model.conditional=true", "model.conditional", True),
        ("optim.d.betas=[0.0, 0.9]", "optim.d.betas", [0.0, 0.9]),
        ("train.stop_on=[nan, collapse]", "train.stop_on", ["nan", "collapse"]),
    ],
)
def test_parse_override(text, key, value):
    assert parse_override(text) == (key, value)


def test_overrides_are_typed():
    cfg = build_config({}, ["optim.g.lr=1e-4", "model.conditional=true", "optim.d.betas=[0.0, 0.9]", "train.ema=0.999"])
    assert cfg.optim.g.lr == pytest.approx(1e-4)
    assert cfg.model.conditional is True
    assert cfg.optim.d.betas == (0.0, 0.9)
    assert cfg.train.ema == 0.999


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["train.stpes=3"], "train.stpes"),
        (["bogus=1"], "bogus"),
        (["train.steps=abc"], "train.steps"),
        (["train.steps=1.5"], "train.steps"),
        (["model.conditional=3"], "model.conditional"),
        (["train.steps=0"], "train.steps"),
        (["loss.name=lsgan"], "loss.name"),
        (["optim.d.name=adagrad"], "optim.d.name"),
        (["optim.d.lr=-1"], "optim.d.lr"),
        (["optim.g.betas=[0.5]"], "optim.g.betas"),
        (["model.d_dropout=1.0"], "model.d_dropout"),
        (["model.pack=0"], "model.pack"),
        (["model.pack=2", "model.conditional=true"], "model.pack"),
        (["model.pack=2", "loss.name=wgan-gp", "model.d_norm=layer"], "model.pack"),
        (["model.pack=3"], "model.pack"),  # 64 is not a multiple of 3
        (["data.image_size=48"], "data.image_size"),
        (["data.image_size=32", "model.g_layers=6"], "model.g_layers"),
        (["data.image_size=64", "model.d_layers=7"], "model.d_layers"),
        (["scaling.num_workers=3"], "train.batch_size"),
        (["scaling.num_workers=3", "model.pack=2"], "train.batch_size"),  # 64 / 3 is uneven before it is unpackable
        (["loss.name=wgan-gp"], "model.d_norm"),
        (["loss.name=hinge", "loss.label_smoothing=0.1"], "loss.label_smoothing"),
        (["data.name=folder"], "data.path"),
        (["data.path=/tmp/x"], "data.path"),
        (["train.amp=fp16"], "train.amp"),
        (["train.ema=0.99", "train.ema_kimg=10"], "train.ema_kimg"),
        (["loss.lecam=-1"], "loss.lecam"),
        (["scaling.sync_batchnorm=true"], "scaling.sync_batchnorm"),
        (["optim.d.name=sgd", "optim.d.nesterov=true"], "optim.d.nesterov"),
        (["train.stop_on=[boredom]"], "train.stop_on"),
        (["optim.critic.name=rmsprop"], "optim.critic"),
        (["model.arch=stylegan"], "model.arch"),
        (["train.batch_size=-4"], "train.batch_size"),
    ],
)
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        build_config({}, overrides)
    assert info.value.key == key, str(info.value)
    assert str(info.value).startswith(key + ": ")


def test_layer_ranges_per_image_size():
    for size, top in ((8, 3), (32, 5), (64, 6), (128, 7)):
        build_config({"data": {"image_size": size}, "model": {"g_layers": top, "d_layers": 2}})
        with pytest.raises(ConfigError):
            build_config({"data": {"image_size": size}, "model": {"g_layers": top + 1}})


def test_yaml_file_and_unknown_section(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("train: {steps: 7}\noptim: {d: {name: sgd, lr: 5.0e-4, momentum: 0.9, nesterov: true}}\n")
    cfg = load_config(good, ["train.steps=9"])
    assert cfg.train.steps == 9 and cfg.optim.d.nesterov
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian: {steps: 7}\n")
    with pytest.raises(ConfigError, match="^trian: unknown key"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_round_trip_through_dict():
    cfg = build_config({}, ["loss.name=combined", "optim.critic.name=rmsprop", "train.stop_on=[nan]"])
    assert build_config(cfg.to_dict()) == cfg


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "raygan.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, key",
    [
        (["--set", "train.stpes=3"], "train.stpes"),
        (["--set", "data.image_size=32", "--set", "model.d_layers=6"], "model.d_layers"),
        (["--set", "scaling.num_workers=3"], "train.batch_size"),
        (["--set", "noequals"], "--set"),
        (["--set", "train.d_loss_threshold=-0.1"], "train.d_loss_threshold"),
    ],
)
def test_cli_bad_config_exits_2_with_one_line(tmp_path, args, key):
    result = run_cli("train", "tune_configs/smoke.yaml", "--storage", str(tmp_path / "store"), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}: "), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()


def test_cli_dry_run_prints_resolved_config():
    result = run_cli("train", "tune_configs/smoke.yaml", "--set", "train.steps=7", "--dry-run")
    assert result.returncode == 0, result.stderr
    import yaml

    resolved = yaml.safe_load(result.stdout)
    assert resolved["train"]["steps"] == 7
    assert resolved["scaling"]["num_workers"] == 2


def test_cli_missing_config_and_bad_arguments():
    result = run_cli("train", "nope.yaml")
    assert result.returncode == 2 and result.stderr.startswith("error: nope.yaml: config file not found")
    result = run_cli("frobnicate")
    assert result.returncode == 2 and result.stderr.startswith("error: ")


def test_cli_missing_data_exits_2_before_ray(tmp_path):
    result = run_cli(
        "train",
        "tune_configs/smoke.yaml",
        "--storage",
        str(tmp_path / "store"),
        "--set",
        "data.name=folder",
        "--set",
        f"data.path={tmp_path}/empty",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: data.path: {tmp_path}/empty: no such folder"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.png").write_bytes(b"garbage")
    result = run_cli(
        "train",
        "tune_configs/smoke.yaml",
        "--storage",
        str(tmp_path / "store"),
        "--set",
        "data.name=folder",
        "--set",
        f"data.path={tmp_path}/empty",
    )
    assert result.returncode == 2 and "no readable images" in result.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["loss.r1_gamma=1"], "model.d_norm"),  # the default D has batch norm
        (["train.ada_target=0.6"], "train.ada_target"),  # nothing to adapt
        (["train.augment_p=1.5", "train.augment=[color]"], "train.augment_p"),
        (["data.name=emoji", "data.image_size=128"], "data.image_size"),
        (["data.background=pink"], "data.background"),
        (["loss.reg_interval=0"], "loss.reg_interval"),
    ],
)
def test_modern_recipe_keys_are_checked(overrides, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        build_config({}, overrides)


def _outside(f: dataclasses.Field):
    """A YAML value just outside the constraint a field carries (one_of / within), or None if it has none."""
    if "choices" in f.metadata:
        choices, entry = f.metadata["choices"], f.metadata["entry"]
        bad = max(choices) + 1 if all(isinstance(c, int) for c in choices) else "nope"
        return {entry: bad} if entry else [bad] if f.type.startswith("tuple") else bad
    if "range" in f.metadata:
        lo, hi = f.metadata["range"]["lo"], f.metadata["range"]["hi"]
        bad = lo - 1 if lo is not None else hi + 1
        return [bad, bad] if f.type.startswith("tuple") else bad
    return None


def test_every_field_constraint_is_checked_naming_its_key():
    checked = 0
    for key, f in config._leaf_fields(Config):
        bad = _outside(f)
        if bad is None:
            continue
        with pytest.raises(ConfigError, match=r"(is not one of|is outside)") as info:
            build_config({}, {key: bad})
        assert info.value.key.startswith(key), str(info.value)
        checked += 1
    assert checked > 50


def test_choices_come_from_the_fields():
    assert CHOICES["tune.search_alg.name"] == ("random", "optuna", "bohb")
    assert CHOICES["optim.critic.name"] == CHOICES["optim.g.name"] == ("adam", "sgd", "rmsprop")
    assert Config().tune.scheduler == {"name": "asha"} and Config().model.d_activation == "leaky_relu"
    with pytest.raises(ConfigError, match=r"^tune.scheduler.name: missing"):
        build_config({}, {"tune.scheduler": {"grace_period": 2}})
    with pytest.raises(ConfigError, match=r"^loss.label_smoothing: 0.5 is outside \[0, 0.5\)$"):
        build_config({}, ["loss.label_smoothing=0.5"])
    with pytest.raises(ConfigError, match=r"^train.amp: 'fp8' is not one of: null, bf16, fp16$"):
        build_config({}, ["train.amp=fp8"])


def test_readme_tour_lists_the_allowed_values():
    rows = [line for line in (Path(__file__).parent.parent / "README.md").read_text().splitlines() if line[:3] == "| `"]
    for key, choices in CHOICES.items():
        row = next(line for line in rows if line.startswith(f"| `{key.split('.')[0]}` |"))
        missing = [c for c in choices if isinstance(c, str) and c not in row]
        assert not missing, f"README's config tour does not list {key}'s {missing}"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["train.d_loss_threshold=-0.1"],
            "train.d_loss_threshold: -0.1 can never be reached: the gan loss's D loss is never below 0",
        ),
        (
            ["train.g_loss_threshold=-1"],
            "train.g_loss_threshold: -1.0 can never be reached: the gan loss's G loss is never below 0",
        ),
        (
            ["loss.name=hinge", "model.d_norm=spectral", "train.d_loss_threshold=-0.5"],
            "train.d_loss_threshold: -0.5 can never be reached: the hinge loss's D loss is never below 0",
        ),
        (
            ["loss.name=rpgan", "model.d_norm=none", "train.g_loss_threshold=-0.01"],
            "train.g_loss_threshold: -0.01 can never be reached: the rpgan loss's G loss is never below 0",
        ),
        (
            ["loss.name=combined", "loss.combined_weight=0", "train.g_loss_threshold=-2"],
            "train.g_loss_threshold: -2.0 can never be reached: the combined loss's G loss is never below 0",
        ),
        (["train.d_loss_threshold=.nan"], "train.d_loss_threshold: must be finite, got nan"),
        (["train.g_loss_threshold=.inf"], "train.g_loss_threshold: must be finite, got inf"),
    ],
    ids=["gan-d", "gan-g", "hinge-d", "rpgan-g", "combined-without-critic-g", "nan", "inf"],
)
def test_a_loss_threshold_that_can_never_fire_is_refused(overrides, message):
    with pytest.raises(ConfigError) as info:
        build_config({}, overrides)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.d_loss_threshold=0", "train.g_loss_threshold=0"],  # the floor itself: a saturated D reaches it
        ["train.d_loss_threshold=0.2", "train.g_loss_threshold=4.0"],  # the anime-faces project's
        ["loss.name=hinge", "model.d_norm=spectral", "train.d_loss_threshold=0", "train.g_loss_threshold=-5"],
        ["loss.name=wgan", "train.d_loss_threshold=-3", "train.g_loss_threshold=-3"],
        ["loss.name=wgan-gp", "model.d_norm=layer", "train.d_loss_threshold=-10", "train.g_loss_threshold=-10"],
        ["loss.name=combined", "train.d_loss_threshold=-0.1", "train.g_loss_threshold=-0.1"],  # the critic's
    ],
)
def test_thresholds_the_loss_can_reach_are_kept(overrides):
    build_config({}, overrides)
