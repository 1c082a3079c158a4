"""The training step without Ray: every variant trains, thresholds skip exactly, resume is exact."""

import copy

import pytest
import torch
from conftest import usage

from raygan import losses
from raygan.checkpoint import STATE, safe_load, write_checkpoint
from raygan.config import build_config
from raygan.data import indexed_batches, load_dataset
from raygan.losses import lecam as losses_lecam
from raygan.train.step import STANDING_BATCHES, GANEngine, unwrap

TINY = {
    "data": {"image_size": 16},
    "model": {"g_layers": 3, "d_layers": 3, "g_width": 8, "d_width": 8, "latent_dim": 16},
    "train": {"batch_size": 16},
}


def tiny(*overrides):
    return build_config(TINY, list(overrides))


def run_steps(engine, dataset, cfg, steps):
    batches = indexed_batches(dataset, cfg.train.batch_size, cfg.seed)
    n = cfg.train.n_critic
    for _ in range(steps):
        first = engine.step * n
        engine.train_step([batches(first + i) for i in range(n)])


def make(cfg, device="cpu"):
    dataset = load_dataset(cfg.data)
    return GANEngine(cfg, dataset.channels, dataset.num_classes, device), dataset


def params(engine):
    nets = [unwrap(engine.G)] + [unwrap(a.net) for a in engine.adversaries]
    return torch.cat([p.detach().flatten() for net in nets for p in net.state_dict().values() if p.is_floating_point()])


VARIANTS = [
    ["loss.name=gan"],
    ["loss.name=gan", "loss.label_smoothing=0.1", "loss.label_flip=0.05", "loss.label_smoothing_mode=uniform"],
    ["loss.name=wgan", "train.n_critic=2", "optim.d.name=rmsprop", "optim.d.lr=5e-5"],
    ["loss.name=wgan-gp", "model.d_norm=layer", "train.n_critic=2"],
    ["loss.name=hinge", "model.d_norm=spectral"],
    ["loss.name=combined", "optim.critic.name=rmsprop"],
    ["model.conditional=true", "train.ema=0.9"],
    ["optim.d.name=sgd", "optim.d.momentum=0.9", "optim.d.nesterov=true", "model.d_dropout=0.3"],
    ["model.g_activation=leaky_relu", "model.d_norm=none", "model.g_norm=none"],
    ["data.name=stacked-digits", "model.conditional=true"],
    ["data.name=random", "data.channels=3"],
    ["data.name=stacked-digits", "model.pack=2", "loss.label_flip=0.1"],
    ["train.augment=[translation, cutout]", "loss.name=wgan-gp", "model.d_norm=layer"],
    ["loss.name=rpgan", "model.arch=resnet", "model.d_norm=none", "loss.r1_gamma=1", "loss.r2_gamma=1"],
    ["train.augment=[color, translation]", "train.ada_target=0.6", "train.augment_p=0.2", "data.xflip=true"],
    ["loss.name=hinge", "loss.lecam=0.1", "train.ema_kimg=0.1", "train.amp=bf16"],
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=[" ".join(v) for v in VARIANTS])
def test_every_variant_trains_with_finite_losses(overrides):
    cfg = tiny(*overrides)
    engine, dataset = make(cfg)
    before = params(engine).clone()
    run_steps(engine, dataset, cfg, 3)
    metrics = engine.pop_metrics()
    assert engine.step == 3
    losses = {k: v for k, v in metrics.items() if k.endswith("_loss")}
    assert "g_loss" in losses and "d_loss" in losses
    assert all(name == name.lower() for name in metrics), metrics  # one naming scheme: d_loss, lr_g, critic_loss
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), metrics
    assert not torch.equal(before, params(engine))
    z = torch.randn(5, cfg.model.latent_dim)
    labels = torch.arange(5) if cfg.model.conditional else None
    assert engine.generate(z, labels).shape == (5, dataset.channels, 16, 16)


def test_wgan_clips_the_critic():
    cfg = tiny("loss.name=wgan", "loss.clip=0.01")
    engine, dataset = make(cfg)
    run_steps(engine, dataset, cfg, 2)
    assert max(p.abs().max().item() for p in engine.adversaries[0].net.parameters()) <= 0.01 + 1e-7


def test_ema_follows_the_generator():
    cfg = tiny("train.ema=0.5")
    engine, dataset = make(cfg)
    start = torch.cat([p.flatten() for p in engine.G_ema.parameters()]).clone()
    run_steps(engine, dataset, cfg, 2)
    ema = torch.cat([p.flatten() for p in engine.G_ema.parameters()])
    g = torch.cat([p.detach().flatten() for p in engine.G.parameters()])
    assert not torch.equal(ema, start) and not torch.equal(ema, g)


def test_ema_half_life_halves_a_weight_every_ema_kimg_thousand_images():
    """Decay 0.5 ** (batch / half-life), the half-life held to rampup x images seen until it reaches ema_kimg."""
    engine, _ = make(tiny("train.batch_size=16", "train.ema_kimg=0.8", "train.ema_rampup=0.5"))
    engine.step = 9  # 160 images seen by the end of this step: half-life min(800, 80) = 80 images
    assert engine.ema_decay() == pytest.approx(0.5 ** (16 / 80))
    engine.step = 199  # 3,200 images: 1,600 > 800, the full half-life
    assert engine.ema_decay() == pytest.approx(0.5 ** (16 / 800))
    engine, _ = make(tiny("train.batch_size=16", "train.ema_kimg=0.8", "train.ema_rampup=null"))
    assert engine.ema_decay() == pytest.approx(0.5 ** (16 / 800))  # no ramp: from the first step
    engine, _ = make(tiny("train.ema=0.999"))
    assert engine.ema_decay() == pytest.approx(0.1)  # the decay form still warms up from 0.1


def test_lecam_pulls_each_side_toward_the_others_moving_average():
    """D's loss gains lecam * (mean relu(D(real) - avg D(fake))^2 + mean relu(avg D(real) - D(fake))^2),
    computed against the averages before this batch; then the averages follow the batch."""
    engine, dataset = make(tiny("loss.name=hinge", "loss.lecam=0.5", "loss.lecam_decay=0.9"))
    D = engine.adversaries[0].net
    original_forward = D.forward
    scores = iter([torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])] * 2)  # real, fake, real, fake
    D.forward = lambda images, labels=None: original_forward(images, labels)[:2] * 0 + next(scores)
    real, fake = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    engine._lecam_ema = torch.tensor([0.5, -0.5])
    engine.step = 1  # past the first batch, which only sets the averages
    engine._adversary_update(engine.adversaries[0], real, None, fake, None, purpose=0)
    # relu([2, 0] - (-0.5))^2 = [6.25, 0.25] -> 3.25;  relu(0.5 - [-1, 1])^2 = [2.25, 0] -> 1.125
    assert engine.pop_metrics()["d_lecam"] == pytest.approx(3.25 + 1.125)
    assert engine._lecam_ema.tolist() == pytest.approx([0.9 * 0.5 + 0.1 * 1.0, 0.9 * -0.5 + 0.1 * 0.0])
    assert losses_lecam(torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0]), 0.5, -0.5).item() == pytest.approx(4.375)


def test_bf16_autocasts_on_a_cpu_only_where_it_computes_bf16_natively():
    from raygan.train.step import autocast_dtype, cpu_has_native_bf16

    cpu = torch.device("cpu")
    assert autocast_dtype("bf16", cpu) == (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert autocast_dtype("fp16", cpu) is None and autocast_dtype(None, cpu) is None
    assert autocast_dtype("fp16", torch.device("cuda")) == torch.float16


def test_d_threshold_skips_exactly_the_updates_below_it():
    # Above any BCE value: D never updates, its weights never move, every update counts as skipped.
    cfg = tiny("train.d_loss_threshold=100.0", "train.n_critic=2")
    engine, dataset = make(cfg)
    d_before = [p.clone() for p in engine.adversaries[0].net.parameters()]
    run_steps(engine, dataset, cfg, 3)
    assert engine.d_skipped == 6 and engine.g_skipped == 0
    assert all(torch.equal(a, b) for a, b in zip(d_before, engine.adversaries[0].net.parameters()))


def test_thresholds_skip_when_and_only_when_the_loss_is_at_or_below():
    """Replay: with the threshold between the losses of a free run, the skips match that run's losses."""
    cfg = tiny()
    engine, dataset = make(cfg)
    run_steps(engine, dataset, cfg, 1)
    first_d = engine.pop_metrics()["d_loss"]
    # threshold just above the first step's D loss: the first update is skipped
    cfg_skip = tiny(f"train.d_loss_threshold={first_d + 1e-4}")
    engine, dataset = make(cfg_skip)
    run_steps(engine, dataset, cfg_skip, 1)
    assert engine.d_skipped == 1
    cfg_keep = tiny(f"train.d_loss_threshold={first_d - 1e-4}")
    engine, dataset = make(cfg_keep)
    run_steps(engine, dataset, cfg_keep, 1)
    assert engine.d_skipped == 0


def test_g_threshold_freezes_the_generator():
    cfg = tiny("train.g_loss_threshold=1000.0")
    engine, dataset = make(cfg)
    g_before = [p.clone() for p in engine.G.parameters()]
    run_steps(engine, dataset, cfg, 3)
    assert engine.g_skipped == 3 and engine.d_skipped == 0
    assert all(torch.equal(a, b) for a, b in zip(g_before, engine.G.parameters()))
    assert engine.pop_metrics()["g_skipped"] == 3


def test_metrics_over_an_interval_are_means_over_the_updates_that_ran():
    """One report over four steps equals the mean of four per-step reports, each metric over the steps
    that produced it: g_grad_norm exists only for the G updates that ran (here steps 0 and 2)."""
    cfg = tiny("train.n_critic=2", "train.augment=[translation]", "loss.name=wgan-gp", "model.d_norm=layer")
    frozen = tiny(
        "train.n_critic=2",
        "train.augment=[translation]",
        "loss.name=wgan-gp",
        "model.d_norm=layer",
        "train.g_loss_threshold=1000.0",
    )

    def run(report_every):
        engine, dataset = make(cfg)
        reports = []
        for step in range(4):
            engine.cfg = frozen if step % 2 else cfg  # G updates on the even steps only
            run_steps(engine, dataset, cfg, 1)
            if (step + 1) % report_every == 0:
                reports.append(engine.pop_metrics())
        return engine, reports

    engine, (pooled,) = run(report_every=4)
    _, per_step = run(report_every=1)
    assert engine.g_skipped == 2
    assert [("g_grad_norm" in r) for r in per_step] == [True, False, True, False]
    for name in ("g_loss", "g_grad_norm", "d_loss", "d_gp", "d_accuracy"):
        values = [r[name] for r in per_step if name in r]
        assert pooled[name] == pytest.approx(sum(values) / len(values), rel=1e-5), name


RESUMABLE = [
    [],
    ["loss.name=combined", "train.ema=0.9", "model.conditional=true"],
    ["train.augment=[translation, cutout]"],
    # adaptive and lazy: p, its unfinished sign sums and the penalty schedule must survive the checkpoint
    [
        "loss.name=rpgan",
        "model.d_norm=none",
        "loss.r1_gamma=2",
        "loss.r2_gamma=1",
        "loss.reg_interval=2",
        "train.augment=[color, translation, cutout]",
        "train.augment_p=0",
        "train.ada_target=0.6",
        "train.ada_interval=2",
        "train.ada_kimg=0.1",
        "data.xflip=true",
    ],
    # LeCam's two moving averages and a half-life EMA still ramping up
    ["loss.name=hinge", "loss.lecam=0.3", "train.ema_kimg=1", "train.ema_rampup=0.5"],
]


@pytest.mark.parametrize("overrides", RESUMABLE)
def test_resume_is_exact(tmp_path, overrides):
    """k steps, checkpoint to disk, fresh engine, k more == 2k uninterrupted."""
    cfg = tiny(*overrides)
    straight, dataset = make(cfg)
    run_steps(straight, dataset, cfg, 6)

    first, _ = make(cfg)
    run_steps(first, dataset, cfg, 3)
    write_checkpoint(tmp_path / "ckpt", first, cfg, {})
    resumed, _ = make(cfg)
    resumed.load_state_dict(safe_load(tmp_path / "ckpt" / STATE))
    assert resumed.step == 3
    run_steps(resumed, dataset, cfg, 3)
    assert torch.equal(params(straight), params(resumed))
    if straight.G_ema is not None:
        assert all(torch.equal(a, b) for a, b in zip(straight.G_ema.parameters(), resumed.G_ema.parameters()))
    assert straight.augment_p == resumed.augment_p
    assert torch.equal(straight._lecam_ema, resumed._lecam_ema)


def test_ada_raises_p_while_d_is_sure_of_the_reals_and_lowers_it_after():
    """E[sign D(real)] above the target moves p up by batch * interval / (kimg * 1000) per adjustment."""
    cfg = tiny(
        "train.augment=[translation]",
        "train.augment_p=0",
        "train.ada_target=0.6",
        "train.ada_interval=1",
        "train.ada_kimg=0.16",
    )  # 16 images a step: p moves by 0.1 each step
    engine, dataset = make(cfg)
    D = engine.adversaries[0].net
    original_forward = D.forward
    D.forward = lambda images, labels=None: original_forward(images, labels) * 0 + 1.0  # sure every image is real
    run_steps(engine, dataset, cfg, 3)
    assert engine.augment_p == pytest.approx(0.3)
    assert engine.pop_metrics()["augment_p"] == pytest.approx(0.3)
    D.forward = lambda images, labels=None: original_forward(images, labels) * 0 - 1.0  # now sure they are fake
    run_steps(engine, dataset, cfg, 5)
    assert engine.augment_p == 0.0  # clamped at 0


def test_lazy_regularisation_adds_the_penalty_on_its_steps_only():
    cfg = tiny("loss.name=hinge", "model.d_norm=none", "loss.r1_gamma=1", "loss.reg_interval=3")
    engine, dataset = make(cfg)
    counts = []
    for _ in range(6):
        run_steps(engine, dataset, cfg, 1)
        counts.append("d_r1" in engine.pop_metrics())
    assert counts == [True, False, False, True, False, False]


def test_r1_and_the_gradient_penalty_both_reach_d():
    """D's objective is the loss plus every penalty: with SGD (lr 1), the update with R1 on differs from the
    one without by exactly gamma / 2 times R1's gradient at the starting weights, the WGAN-GP penalty kept."""
    base = ("loss.name=wgan-gp", "model.d_norm=layer", "optim.d.name=sgd", "optim.d.lr=1.0", "loss.gp_weight=10")
    gamma = 4.0
    without, dataset = make(tiny(*base))
    with_r1, _ = make(tiny(*base, f"loss.r1_gamma={gamma}"))
    D0 = copy.deepcopy(unwrap(with_r1.adversaries[0].net))
    real, _ = indexed_batches(dataset, without.cfg.train.batch_size, without.cfg.seed)(0)  # the step's first batch
    r1_grads = torch.autograd.grad(losses.gradient_norm_penalty(D0, real, None), list(D0.parameters()))
    for engine in (without, with_r1):
        run_steps(engine, dataset, engine.cfg, 1)
    assert "d_gp" in with_r1.pop_metrics() and "d_gp" in without.pop_metrics()
    moved = zip(unwrap(with_r1.adversaries[0].net).parameters(), unwrap(without.adversaries[0].net).parameters())
    for (a, b), grad in zip(moved, r1_grads):
        torch.testing.assert_close(a - b, -1.0 * (gamma / 2) * grad, rtol=1e-4, atol=1e-5)
    assert any(grad.abs().max() > 1e-3 for grad in r1_grads)  # R1 moves D here: the comparison means something


def test_xflip_mirrors_about_half_of_the_real_images():
    cfg = tiny("data.xflip=true", "train.batch_size=64")
    engine, dataset = make(cfg)
    images = dataset.batch(torch.arange(64))[0]
    flipped = engine._xflip(images, 0)
    mirrored = torch.tensor([torch.equal(a, b.flip(2)) and not torch.equal(a, b) for a, b in zip(flipped, images)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(flipped, images)])
    assert bool((mirrored | kept).all()) and 20 < int(mirrored.sum()) < 44


def test_resume_applies_the_configs_hyperparameters(tmp_path):
    cfg = tiny("optim.g.lr=1e-3", "optim.d.lr=1e-3")
    engine, dataset = make(cfg)
    run_steps(engine, dataset, cfg, 1)
    write_checkpoint(tmp_path / "c", engine, cfg, {})
    mutated = tiny("optim.g.lr=3e-4", "optim.d.lr=5e-5", "optim.d.betas=[0.0, 0.9]")
    resumed, _ = make(mutated)
    resumed.load_state_dict(safe_load(tmp_path / "c" / STATE))
    assert resumed.opt_G.param_groups[0]["lr"] == 3e-4
    assert resumed.adversaries[0].optimizer.param_groups[0]["lr"] == 5e-5
    assert resumed.adversaries[0].optimizer.param_groups[0]["betas"] == (0.0, 0.9)


def test_crafted_pickle_is_rejected(tmp_path):
    import pickle

    from raygan.errors import UserError

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "state.pt"
    path.write_bytes(pickle.dumps({"G": Boom()}))
    with pytest.raises(UserError, match="state.pt: not a loadable raygan checkpoint"):
        safe_load(path)


def test_recalibrate_gives_the_ema_generator_batchnorm_statistics_of_its_own():
    cfg = tiny("train.ema=0.9")
    engine, dataset = make(cfg)
    run_steps(engine, dataset, cfg, 3)
    G_buffers = [b.clone() for b in unwrap(engine.G).buffers()]
    engine.recalibrate_sampler()
    g = torch.Generator().manual_seed(cfg.seed)
    first_layer = engine.G_ema.main[0]
    with torch.no_grad():
        outputs = torch.cat(
            [first_layer(torch.randn(16, 16, generator=g)[:, :, None, None]) for _ in range(STANDING_BATCHES)]
        )
    first_norm = engine.G_ema.main[1]
    assert torch.allclose(first_norm.running_mean, outputs.mean((0, 2, 3)), atol=1e-6)
    assert first_norm.momentum == cfg.model.bn_momentum and not engine.G_ema.training
    assert all(torch.equal(a, b) for a, b in zip(G_buffers, unwrap(engine.G).buffers()))  # training untouched


def _average_buffers_on_rank(rank: int, store_file: str, out_file: str) -> None:
    import os

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=2)
    engine = GANEngine(tiny("train.ema=0.9"), channels=1, num_classes=10, rank=rank, world_size=2)
    norms = [
        next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
        for net in (unwrap(engine.G), engine.G_ema)
    ]
    for bn in norms:
        bn.running_mean.fill_(float(rank))  # ranks disagree, as after steps on different half batches
        bn.running_var.fill_(1.0 + 2 * rank)
    engine.average_buffers()
    for _ in range(2):
        engine._track("probe", torch.tensor(float(rank)))  # a metric the ranks disagree on
    probe = engine.pop_metrics()["probe"]
    if rank == 0:
        torch.save(
            {
                "mean": torch.stack([bn.running_mean for bn in norms]),
                "var": torch.stack([bn.running_var for bn in norms]),
                "probe": probe,
            },
            out_file,
        )
    dist.destroy_process_group()
    # Gloo's worker threads outlive destroy_process_group once torch._dynamo is imported (an optimizer does it);
    # one that frees an all_reduce's tensors while Python finalizes aborts this process, so skip finalization.
    os._exit(0)


def test_average_buffers_makes_the_ranks_agree(tmp_path):
    """DDP does not broadcast BatchNorm statistics every step; before evaluations they are averaged, in G and its EMA.
    Reported metrics are means over ranks too."""
    import torch.multiprocessing as mp

    out = tmp_path / "rank0.pt"
    mp.spawn(_average_buffers_on_rank, args=(str(tmp_path / "store"), str(out)), nprocs=2)
    averaged = torch.load(out)
    assert torch.all(averaged["mean"] == 0.5) and torch.all(averaged["var"] == 2.0)
    assert averaged["probe"] == 0.5  # (0 + 0 + 1 + 1) / 4 tracked values


@pytest.mark.slow
def test_compiled_networks_train_and_save_plain_weights():
    """train.compile wraps G and D in torch.compile; checkpoints still hold the plain networks' keys."""
    cfg = tiny("train.compile=true")
    engine, dataset = make(cfg)
    before = params(engine).clone()
    run_steps(engine, dataset, cfg, 2)
    assert not torch.equal(before, params(engine))
    state = engine.state_dict()
    assert not any("_orig_mod" in key for key in state["G"]) and not any("_orig_mod" in key for key in state["D"])
    assert all(torch.isfinite(torch.tensor(v)) for v in engine.pop_metrics().values() if isinstance(v, float))


def test_the_usage_at_the_top_of_step_py_runs():
    from raygan.config import load_config
    from raygan.train import step

    names = {"load_config": load_config, "load_dataset": load_dataset, "indexed_batches": indexed_batches}
    names["GANEngine"] = GANEngine
    exec(usage(step), names)  # one namespace: the example's comprehension sees its variables
    assert names["engine"].step == 1
    assert {"d_loss", "g_loss", "d_skipped", "g_skipped"} <= set(names["metrics"])


def test_a_learning_rate_schedule_resumes_where_it_was():
    """optim.*.lr_end: the engine's progress is in its checkpoint, and a restored engine's optimizers take
    up the schedule there, not at the start (nor at the config's lr, as a PBT mutation would)."""
    cfg = tiny("optim.g.lr_end=2e-5", "optim.d.lr_end=1e-5")
    engine, _ = make(cfg)
    engine.set_progress(0.5)
    lrs = {name: opt.param_groups[0]["lr"] for name, opt, _ in engine._optimizers()}
    assert lrs == pytest.approx({"G": 1.1e-4, "D": 1.05e-4}, rel=1e-9)  # halfway down each cosine
    restored, _ = make(cfg)
    restored.load_state_dict(copy.deepcopy(engine.state_dict()))
    assert restored.progress == 0.5
    assert {name: opt.param_groups[0]["lr"] for name, opt, _ in restored._optimizers()} == lrs
