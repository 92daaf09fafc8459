"""Optimisers and learning-rate schedules against torch.optim over tens of steps, float64.

Each test feeds the same gradient sequence (a fixed quadratic's gradients at the current
parameters, so the trajectories would part if one update differed) to seqgraph's optimiser
and to torch's, with the learning rate set from a schedule before every update."""

import math

import numpy as np
import pytest

from seqgraph.train.optim import make_optimizer, make_schedule

torch = pytest.importorskip("torch")

STEPS = 40
TARGET = np.array([[0.3, -1.2, 2.0], [0.7, 0.1, -0.4]])


def quadratic_grad(p, step):
    """The gradient of sum(scale * (p - target)^2 + 0.1 sin(p)), with a scale that changes by step."""
    scale = 1.0 + 0.5 * math.sin(step)
    return 2 * scale * (p - TARGET) + 0.1 * np.cos(p)


def ours(name, options, schedule=None, steps=STEPS):
    """The parameter after each update, and the learning rate each update used."""
    p = {"w": np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])}
    optimizer = make_optimizer(name, **options)
    base = optimizer.lr
    trail, rates = [], []
    for step in range(steps):
        if schedule is not None:
            optimizer.lr = schedule.lr_at(step, base)
        rates.append(optimizer.lr)
        optimizer.step(p, {"w": quadratic_grad(p["w"], step)})
        trail.append(p["w"].copy())
    return np.array(trail), rates


def theirs(make, make_scheduler=None, steps=STEPS):
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], dtype=torch.float64, requires_grad=True)
    optimizer = make([w])
    scheduler = make_scheduler(optimizer) if make_scheduler else None
    trail, rates = [], []
    for step in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        w.grad = torch.from_numpy(quadratic_grad(w.detach().numpy(), step))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        trail.append(w.detach().numpy().copy())
    return np.array(trail), rates


@pytest.mark.parametrize("name, options, make", [
    ("adamw", {}, lambda p: torch.optim.AdamW(p)),
    ("adamw", {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.3},
     lambda p: torch.optim.AdamW(p, lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3)),
    ("adamw", {"lr": 0.05, "weight_decay": 0.1, "amsgrad": True},
     lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1, amsgrad=True)),
    ("adam", {"lr": 0.05, "weight_decay": 0.1, "amsgrad": True},
     lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1, amsgrad=True)),
    ("adagrad", {}, lambda p: torch.optim.Adagrad(p)),
    ("adagrad", {"lr": 0.3, "lr_decay": 0.05, "weight_decay": 0.2, "initial_accumulator_value": 0.5, "eps": 1e-6},
     lambda p: torch.optim.Adagrad(p, lr=0.3, lr_decay=0.05, weight_decay=0.2, initial_accumulator_value=0.5,
                                   eps=1e-6)),
])
def test_optimizers_follow_torch(name, options, make):
    mine, _ = ours(name, options)
    expected, _ = theirs(make)
    assert np.abs(mine[-1] - mine[0]).max() > 1e-2  # it moved
    np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("schedule, make_scheduler", [
    (dict(name="linear", start_factor=0.1, total_iters=15),
     lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=15)),
    (dict(name="linear", start_factor=1.0, end_factor=0.2, total_iters=25),
     lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.2, total_iters=25)),
    (dict(name="cosine", t_max=30, eta_min=0.001),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30, eta_min=0.001)),
    (dict(name="exponential_decay", gamma=0.93),
     lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.93)),
    (dict(name="step_decay", every=7, gamma=0.5),
     lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5)),
    (dict(name="cosine", t_max=25, warmup=10, warmup_start=0.05),
     lambda o: torch.optim.lr_scheduler.SequentialLR(o, [
         torch.optim.lr_scheduler.LinearLR(o, start_factor=0.05, total_iters=10),
         torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=25)], milestones=[10])),
])
def test_schedules_follow_torch_step_by_step(schedule, make_scheduler):
    schedule = dict(schedule)
    built = make_schedule(schedule.pop("name"), per="step", **schedule)
    mine, my_rates = ours("adamw", {"lr": 0.1}, built)
    expected, rates = theirs(lambda p: torch.optim.AdamW(p, lr=0.1), make_scheduler)
    assert len(set(np.round(rates, 12))) > 5  # the rate really changed
    np.testing.assert_allclose(my_rates, rates, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(mine, expected, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("options", [
    {},
    {"mode": "max", "factor": 0.5, "patience": 1, "threshold": 0.05, "threshold_mode": "abs", "cooldown": 2},
    {"factor": 0.3, "patience": 2, "cooldown": 1, "min_lr": 0.004},
])
def test_reduce_on_plateau_follows_torch(options):
    rng = np.random.default_rng(3)
    scores = list(np.round(np.concatenate([np.linspace(1, 0.5, 6), 0.5 + 0.02 * rng.normal(size=34)]), 3))
    schedule = make_schedule("reduce_on_plateau", **options)
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **options)
    expected = []
    for epoch in range(len(scores)):
        expected.append(optimizer.param_groups[0]["lr"])
        scheduler.step(scores[epoch])
    mine = [schedule.lr_at(epoch, 0.1, scores[:epoch]) for epoch in range(len(scores))]
    assert len(set(expected)) >= 2
    np.testing.assert_allclose(mine, expected, rtol=1e-14)


def test_clip_value_follows_torch():
    from seqgraph.train.optim import clip_grad_value
    rng = np.random.default_rng(0)
    grads = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=5)}
    tensors = [torch.tensor(g, requires_grad=True) for g in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_value_(tensors, 0.4)
    clip_grad_value(np, grads, 0.4)
    for t, g in zip(tensors, grads.values()):
        np.testing.assert_array_equal(g, t.grad.numpy())
    assert np.abs(grads["a"]).max() == 0.4
