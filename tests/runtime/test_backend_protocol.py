"""The backend protocol: the compiler reads a backend's capabilities and runs its overrides,
a backend of its own (over a stand-in namespace) computes what NumPy computes, and CuPy's
capabilities are wired without CuPy."""

import sys
import types

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.backends import (BACKENDS, DEFAULT_BACKEND, Backend, Capabilities, Override, backend_of,
                               backend_kind, capabilities, get_backend, ops_for)
from seqgraph.backends.cupy_backend import CupyBackend
from seqgraph.gradcheck import random_inputs
from seqgraph.ops import REGISTRY

from .conftest import lstm_language_model


class Namespace:
    """NumPy's functions under another object: a namespace no backend knows."""

    def __getattr__(self, name):
        return getattr(np, name)


class Recording(Backend):
    """A backend of its own over :class:`Namespace`, counting what the compiler asks."""

    name = "recording"

    def __init__(self, overrides=None):
        self.xp = Namespace()
        self.asked = 0
        if overrides is not None:
            self.overrides = overrides

    def capabilities(self) -> Capabilities:
        self.asked += 1
        return Capabilities(memory_bounds=True)

    def first_byte(self, array) -> int:
        return array.__array_interface__["data"][0]

    def to_host(self, array):
        return np.asarray(array)


def _gradients(backend):
    model = lstm_language_model(hidden=5, inputs=3, classes=4)
    inputs, lengths = random_inputs(model, batch=3, steps=4)
    net = sg.compile(model, backend=backend, dtype="float64", seed=1)
    out = net.forward(inputs, lengths)
    return {"loss": np.asarray(out["loss"]), **{k: np.asarray(v) for k, v in net.backward().items()}}


def test_a_backend_of_its_own_computes_what_numpy_does_and_is_asked_its_capabilities():
    backend = Recording()
    got, expected = _gradients(backend), _gradients(DEFAULT_BACKEND)
    assert backend.asked > 0 and backend_of(backend.xp) is backend
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-10, atol=1e-12, err_msg=key)


def test_the_compiled_program_runs_a_backends_override_and_falls_back_where_it_declines():
    calls = []

    def declining_forward(xp, *inputs, **attrs):
        calls.append("forward")
        return None  # the registry's own rule runs

    def declining_vjp(xp, g, out, *inputs, wanted=None, **attrs):
        calls.append("vjp")
        return None

    backend = Recording({"cross_entropy": Override(forward=declining_forward, vjp=declining_vjp)})
    got, expected = _gradients(backend), _gradients(DEFAULT_BACKEND)
    assert "forward" in calls and "vjp" in calls
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-12)


def test_an_override_may_give_some_gradients_and_the_op_gives_the_rest():
    def first_only(xp, g, out, a, b, wanted=None):
        return (np.full(a.shape, 7.0), None)

    backend = Recording({"mul": Override(vjp=first_only)})
    mul = backend.ops["mul"]
    a, b, g = np.ones((2, 3)), np.arange(6.0).reshape(2, 3), np.full((2, 3), 2.0)
    da, db = mul.partial_vjp(backend.xp, g, a * b, a, b)
    assert (da == 7).all() and np.array_equal(db, g * a)
    assert mul.partial_vjp(backend.xp, g, a * b, a, b, wanted=(False, True))[0] is None
    assert backend.ops["add"] is REGISTRY["add"]  # no override: the registry's own record


def test_bare_namespaces_get_the_backend_they_belong_to():
    assert backend_of(np).name == DEFAULT_BACKEND and capabilities(np).memory_bounds
    assert ops_for(np)["cross_entropy"] is not REGISTRY["cross_entropy"]  # the native rows in front
    plain = Namespace()
    assert capabilities(plain) == Capabilities() and ops_for(plain)["cross_entropy"] is REGISTRY["cross_entropy"]
    assert set(BACKENDS) == {"numpy", "cupy"} and backend_kind("cupy") is CupyBackend
    with pytest.raises(sg.SeqgraphError, match="unknown backend 'numpi'"):
        get_backend("numpi")


def test_cupys_capabilities_are_wired_without_cupy(monkeypatch):
    fake = types.ModuleType("cupy")
    assert CupyBackend.over(fake) is None  # not the imported CuPy
    monkeypatch.setitem(sys.modules, "cupy", fake)
    backend = backend_of(fake)
    assert isinstance(backend, CupyBackend) and backend.overrides == {}
    found = backend.capabilities()
    assert found.chain_kernels and found.step_capture and found.cuda_arrays and found.memory_bounds
    assert not (found.native_loops or found.packed_products or found.row_sharing or found.float_errors)
    with pytest.raises(sg.SeqgraphError, match="cannot record"):
        Recording().recorder()
