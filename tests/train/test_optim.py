"""Optimisers against updates worked out by hand, clipping, schedules and the factories.

Every update test runs two steps on a two-element parameter, with
p0 = [1, -2], g1 = [0.5, 1], g2 = [-1, 0.25], and spells out torch.optim's formula.
"""

import math

import numpy as np
import pytest

from seqgraph.errors import SeqgraphError
from seqgraph.train import optim
from seqgraph.train.optim import (SGD, Adam, RMSprop, clip_grad_norm, constant,
                                  exponential_decay, make_optimizer, make_schedule, step_decay)

P0 = [1.0, -2.0]
G1 = np.array([0.5, 1.0])
G2 = np.array([-1.0, 0.25])


def two_steps(opt, dtype=np.float64):
    """Run ``opt`` for two steps; return the parameter after each."""
    params = {"w": np.array(P0, dtype=dtype)}
    out = []
    for g in (G1, G2):
        opt.step(params, {"w": g.astype(dtype)})
        out.append(params["w"].copy())
    return out


def test_sgd_plain():
    p1, p2 = two_steps(SGD(lr=0.1))
    # p = p - lr * g
    np.testing.assert_allclose(p1, [1 - 0.05, -2 - 0.1])
    np.testing.assert_allclose(p2, [0.95 + 0.1, -2.1 - 0.025])


def test_sgd_momentum():
    p1, p2 = two_steps(SGD(lr=0.1, momentum=0.9))
    # b1 = g1 = [0.5, 1];                  p1 = p0 - 0.1 * b1 = [0.95, -2.1]
    # b2 = 0.9 * b1 + g2 = [-0.55, 1.15];  p2 = p1 - 0.1 * b2 = [1.005, -2.215]
    np.testing.assert_allclose(p1, [0.95, -2.1])
    np.testing.assert_allclose(p2, [1.005, -2.215])


def test_sgd_nesterov():
    p1, p2 = two_steps(SGD(lr=0.1, momentum=0.9, nesterov=True))
    # b1 = g1;  step1 = g1 + 0.9 * b1 = [0.95, 1.9];          p1 = [0.905, -2.19]
    # b2 = [-0.55, 1.15];  step2 = g2 + 0.9 * b2 = [-1.495, 1.285];  p2 = [1.0545, -2.3185]
    np.testing.assert_allclose(p1, [0.905, -2.19])
    np.testing.assert_allclose(p2, [1.0545, -2.3185])


def test_sgd_weight_decay():
    p1, p2 = two_steps(SGD(lr=0.1, weight_decay=0.5))
    # g' = g + 0.5 * p:  g1' = [0.5 + 0.5, 1 - 1] = [1, 0];  p1 = [0.9, -2]
    #                    g2' = [-1 + 0.45, 0.25 - 1] = [-0.55, -0.75];  p2 = [0.955, -1.925]
    np.testing.assert_allclose(p1, [0.9, -2.0])
    np.testing.assert_allclose(p2, [0.955, -1.925])


def test_adam():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    p1, p2 = two_steps(Adam(lr=lr, betas=(b1, b2), eps=eps))
    # step 1: m = 0.1 g1, v = 0.001 g1^2; bias-corrected m^ = g1, v^ = g1^2,
    #         so p moves by lr * g1 / (|g1| + eps): about lr against the sign of g1
    np.testing.assert_allclose(p1, [1 - lr * 0.5 / (0.5 + eps), -2 - lr * 1 / (1 + eps)])
    # step 2: m = 0.9 * 0.1 g1 + 0.1 g2,  v = 0.999 * 0.001 g1^2 + 0.001 g2^2
    m = np.array([0.09 * 0.5 + 0.1 * -1, 0.09 * 1 + 0.1 * 0.25])          # [-0.055, 0.115]
    v = np.array([0.000999 * 0.25 + 0.001 * 1, 0.000999 * 1 + 0.001 * 0.0625])
    m_hat, v_hat = m / (1 - b1 ** 2), v / (1 - b2 ** 2)
    np.testing.assert_allclose(p2, p1 - lr * m_hat / (np.sqrt(v_hat) + eps), rtol=1e-12)
    np.testing.assert_allclose(p2, [0.9 + 0.1 * 0.366104, -2.1 - 0.1 * 0.830598], atol=1e-6)


def test_adam_weight_decay_is_l2_in_the_gradient():
    p1, _ = two_steps(Adam(lr=0.1, weight_decay=1.0))
    # g1' = g1 + p0 = [1.5, -1]: the first step moves against the sign of g1'
    np.testing.assert_allclose(p1, [0.9, -1.9])


def test_rmsprop():
    lr, alpha, eps = 0.01, 0.99, 1e-8
    p1, p2 = two_steps(RMSprop(lr=lr, alpha=alpha, eps=eps))
    # v1 = 0.01 g1^2;  p1 = p0 - lr g1 / (sqrt(v1) + eps) = p0 - lr g1 / (0.1 |g1| + eps)
    np.testing.assert_allclose(p1, [1 - 0.1, -2 - 0.1], rtol=1e-7)
    v2 = 0.99 * 0.01 * G1 ** 2 + 0.01 * G2 ** 2                 # [0.012475, 0.010525]
    np.testing.assert_allclose(p2, p1 - lr * G2 / (np.sqrt(v2) + eps), rtol=1e-12)
    np.testing.assert_allclose(p2, [0.9 + 0.0895323, -2.1 - 0.0243685], atol=1e-6)


def test_rmsprop_momentum_and_centered():
    lr, mu = 0.01, 0.5
    p1, p2 = two_steps(RMSprop(lr=lr, momentum=mu))
    v1 = 0.01 * G1 ** 2
    b1 = G1 / (np.sqrt(v1) + 1e-8)                                 # [10, 10]
    v2 = 0.99 * v1 + 0.01 * G2 ** 2
    b2 = mu * b1 + G2 / (np.sqrt(v2) + 1e-8)
    np.testing.assert_allclose(p1, np.array(P0) - lr * b1)
    np.testing.assert_allclose(p2, p1 - lr * b2)

    c1, c2 = two_steps(RMSprop(lr=lr, centered=True))
    a1 = 0.01 * G1                                                  # running mean of g
    np.testing.assert_allclose(c1, np.array(P0) - lr * G1 / (np.sqrt(v1 - a1 * a1) + 1e-8))
    a2 = 0.99 * a1 + 0.01 * G2
    np.testing.assert_allclose(c2, c1 - lr * G2 / (np.sqrt(v2 - a2 * a2) + 1e-8))


def test_updates_are_in_place_and_keep_the_dtype():
    w = np.array(P0, dtype=np.float32)
    params = {"w": w}
    for opt in (SGD(0.1, momentum=0.9), Adam(0.1), RMSprop(0.1, momentum=0.5)):
        opt.step(params, {"w": G1.astype(np.float32)})
        assert params["w"] is w and w.dtype == np.float32
    grads = {"w": G1.copy()}
    SGD(0.1, weight_decay=0.1).step({"w": np.array(P0)}, grads)
    np.testing.assert_array_equal(grads["w"], G1)  # the caller's gradient is not changed


def test_parameters_without_gradients_are_skipped():
    params = {"a": np.ones(2), "b": np.ones(2)}
    opt = Adam(0.1)
    opt.step(params, {"a": np.ones(2), "b": None})
    np.testing.assert_array_equal(params["b"], [1, 1])
    assert opt.steps == {"a": 1}


@pytest.mark.parametrize("make", [lambda: SGD(0.1, momentum=0.9), lambda: Adam(0.1),
                                  lambda: RMSprop(0.1, momentum=0.3, centered=True)])
def test_state_dict_round_trip_resumes_exactly(make):
    params = {"w": np.array(P0)}
    opt = make()
    opt.step(params, {"w": G1})
    state = opt.state_dict()
    assert all(isinstance(v, (int, float, bool, np.ndarray)) for v in state.values())
    assert state["step/w"] == 1
    resumed_params = {"w": params["w"].copy()}
    resumed = make()
    resumed.load_state_dict({k: np.array(v) if isinstance(v, np.ndarray) else v
                             for k, v in state.items()})
    opt.step(params, {"w": G2})
    resumed.step(resumed_params, {"w": G2})
    np.testing.assert_array_equal(params["w"], resumed_params["w"])


def test_load_state_dict_mismatches():
    with pytest.raises(SeqgraphError, match="unexpected entry 'exp_avg/w'"):
        SGD(0.1, momentum=0.9).load_state_dict({"exp_avg/w": np.zeros(2)})
    opt = Adam(0.1)
    opt.load_state_dict({"step/w": 1, "exp_avg/w": np.zeros(3), "exp_avg_sq/w": np.zeros(3)})
    with pytest.raises(SeqgraphError, match="'w' has shape \\(3,\\) but the parameter has shape \\(2,\\)"):
        opt.step({"w": np.zeros(2)}, {"w": np.zeros(2)})


def test_clip_grad_norm_scales_to_the_max_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    norm = clip_grad_norm(np, grads, max_norm=1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(grads["b"], [[0.8]], rtol=1e-5)
    total = math.sqrt(sum((g ** 2).sum() for g in grads.values()))
    assert total == pytest.approx(1.0, rel=1e-5)
    small = {"a": np.array([0.3, 0.4], dtype=np.float32)}
    assert clip_grad_norm(np, small, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(small["a"], np.array([0.3, 0.4], dtype=np.float32))
    with pytest.raises(SeqgraphError, match="must be positive"):
        clip_grad_norm(np, grads, 0.0)


def test_clip_grad_norm_of_huge_float32_gradients_is_finite_and_scales_them():
    grads = {"a": np.array([3e20, 0.0], dtype=np.float32), "b": np.array([4e20], dtype=np.float32)}
    assert clip_grad_norm(np, grads, max_norm=1.0) == pytest.approx(5e20, rel=1e-6)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0], rtol=1e-5)  # not zeroed by an inf norm
    np.testing.assert_allclose(grads["b"], [0.8], rtol=1e-5)
    broken = {"a": np.array([np.inf, 1.0], dtype=np.float32)}
    assert clip_grad_norm(np, broken, 1.0) == np.inf
    assert broken["a"][0] == np.inf and broken["a"][1] == 1.0  # left as it was, for the caller


def test_schedules():
    assert [constant().lr_at(e, 0.1) for e in range(3)] == [0.1, 0.1, 0.1]
    assert [step_decay(every=2, gamma=0.5).lr_at(e, 1.0) for e in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    assert exponential_decay(0.9).lr_at(3, 2.0) == pytest.approx(2 * 0.729)
    assert make_schedule("step_decay", every=3, gamma=0.1).lr_at(6, 1.0) == pytest.approx(0.01)
    with pytest.raises(SeqgraphError, match="unknown learning-rate schedule 'step_decy'") as e:
        make_schedule("step_decy", every=1)
    assert "did you mean 'step_decay'" in e.value.hint
    with pytest.raises(SeqgraphError, match="step_decay: every must be"):
        step_decay(every=0)


def test_make_optimizer():
    opt = make_optimizer("Adam", lr=0.003, betas=[0.8, 0.99])
    assert isinstance(opt, Adam) and opt.lr == 0.003 and opt.betas == (0.8, 0.99)
    assert isinstance(make_optimizer("sgd", lr=0.1, momentum=0.9, nesterov=True), SGD)
    with pytest.raises(SeqgraphError, match="unknown optimizer 'adma'") as e:
        make_optimizer("adma", lr=0.1)
    assert "did you mean 'adam'" in e.value.hint
    with pytest.raises(SeqgraphError, match="optimizer 'sgd' has no argument 'momentun'") as e:
        make_optimizer("sgd", lr=0.1, momentun=0.9)
    assert "did you mean 'momentum'" in e.value.hint
    with pytest.raises(SeqgraphError, match="optimizer 'sgd' needs lr"):
        make_optimizer("sgd", momentum=0.9)
    with pytest.raises(SeqgraphError, match="lr must be a number, not 'fast'"):
        make_optimizer("rmsprop", lr="fast")
    with pytest.raises(SeqgraphError, match=r"betas\[1\] must be less than 1"):
        make_optimizer("adam", betas=(0.9, 1.0))
    with pytest.raises(SeqgraphError, match="nesterov momentum needs momentum > 0"):
        make_optimizer("sgd", lr=0.1, nesterov=True)


def test_schedule_sets_the_optimizer_lr():
    opt, schedule = SGD(0.1), step_decay(every=1, gamma=0.5)
    opt.lr = schedule.lr_at(2, 0.1)
    p1, _ = two_steps(opt)
    np.testing.assert_allclose(p1, [1 - 0.025 * 0.5, -2 - 0.025])


def test_optim_does_not_import_numpy():
    names = vars(optim)
    assert "np" not in names and "numpy" not in names and "cupy" not in names
    assert optim.array_namespace(np.zeros(1)) is np


def test_adamw_decays_the_parameter_not_the_gradient():
    lr, wd = 0.1, 0.5
    p1, _ = two_steps(make_optimizer("adamw", lr=lr, weight_decay=wd))
    # p0 shrinks by (1 - lr wd) = 0.95, then Adam's first step moves lr against the sign of g1
    np.testing.assert_allclose(p1, [0.95 - 0.1 * 0.5 / (0.5 + 1e-8), -1.9 - 0.1 / (1 + 1e-8)], rtol=1e-12)
    assert make_optimizer("adamw").hyper["weight_decay"] == 0.01  # PyTorch's default


def test_adagrad():
    p1, p2 = two_steps(make_optimizer("adagrad", lr=0.1, lr_decay=1.0, initial_accumulator_value=0.75))
    # s1 = 0.75 + g1^2 = [1, 1.75]; p1 = p0 - 0.1 g1 / sqrt(s1)
    np.testing.assert_allclose(p1, [1 - 0.05, -2 - 0.1 / math.sqrt(1.75)], rtol=1e-9)
    # s2 = s1 + g2^2 = [2, 1.8125]; step 2's rate is 0.1 / (1 + 1 * lr_decay) = 0.05
    np.testing.assert_allclose(p2, p1 - 0.05 * G2 / np.sqrt([2, 1.8125]), rtol=1e-9)


def test_clip_grad_value_clamps_each_element():
    grads = {"a": np.array([-3.0, 0.2, 0.7]), "b": np.array([[0.5, -0.1]])}
    optim.clip_grad_value(np, grads, 0.5)
    np.testing.assert_array_equal(grads["a"], [-0.5, 0.2, 0.5])
    np.testing.assert_array_equal(grads["b"], [[0.5, -0.1]])


def test_warmup_cosine_linear_and_plateau_schedules():
    warm = make_schedule("cosine", t_max=4, eta_min=0.0, warmup=2, warmup_start=0.5, per="step")
    assert warm.per == "step"
    np.testing.assert_allclose([warm.lr_at(n, 1.0) for n in range(7)],
                               [0.5, 0.75, 1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5,
                                (1 + math.cos(3 * math.pi / 4)) / 2, 0.0], atol=1e-15)
    line = make_schedule("linear", start_factor=0.2, total_iters=4)
    np.testing.assert_allclose([line.lr_at(n, 2.0) for n in range(6)], [0.4, 0.8, 1.2, 1.6, 2.0, 2.0])
    plateau = make_schedule("reduce_on_plateau", factor=0.5, patience=1)
    scores = [1.0, 0.9, 0.95, 0.92, 0.91, 0.91]  # no improvement after epoch 2
    assert [plateau.lr_at(n, 1.0, scores[:n]) for n in range(7)] == [1, 1, 1, 1, 0.5, 0.5, 0.25]


def test_schedule_mistakes_are_errors():
    with pytest.raises(SeqgraphError, match="cosine: per must be epoch or step") as e:
        make_schedule("cosine", t_max=5, per="stpe")
    assert "did you mean 'step'" in e.value.hint
    with pytest.raises(SeqgraphError, match="schedule 'cosine' has no argument 'warmpu'") as e:
        make_schedule("cosine", t_max=5, warmpu=3)
    assert "did you mean 'warmup'" in e.value.hint
    with pytest.raises(SeqgraphError, match="reduce_on_plateau: per must be epoch"):
        make_schedule("reduce_on_plateau", per="step")
    with pytest.raises(SeqgraphError, match="schedule .cosine. needs t_max"):
        make_schedule("cosine")
