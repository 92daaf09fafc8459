"""The worked example of "Adding an op" in docs/contributing.md registers an op whose
derived forward, vjp, kernel and in-place form are right."""

import re
from pathlib import Path

import numpy as np
import pytest

from seqgraph.ops import REGISTRY
from seqgraph.ops.kernels import KERNELS, namespace, render

PAGE = Path(__file__).resolve().parents[2] / "docs" / "contributing.md"


@pytest.fixture
def softsign():
    """The op the page's example registers, taken out of the registry again afterwards."""
    section = PAGE.read_text().split("## Adding an op", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    exec(code, {})
    yield REGISTRY["softsign"]
    del REGISTRY["softsign"]


def test_the_worked_example_is_an_op_with_everything_derived(softsign):
    x = np.linspace(-3.0, 3.0, 13).reshape(13, 1) * np.ones((1, 4))
    g = np.random.default_rng(0).normal(size=x.shape)
    out = softsign(np, x)
    np.testing.assert_allclose(out, x / (1 + np.abs(x)), rtol=1e-15)
    (grad,) = softsign.vjp(np, g, out, x)
    eps = 1e-6
    np.testing.assert_allclose(grad, g * (softsign(np, x + eps) - softsign(np, x - eps)) / (2 * eps), rtol=1e-5)
    kernel = KERNELS["softsign"]
    assert kernel.needs == {0: (0,)} and softsign.in_place is None
    names = dict(namespace(np), a0=x, y=np.empty_like(x), g=g, dst=np.empty_like(x), tmp=np.empty_like(x))
    calls = kernel.forward("y", ["a0"]) + kernel.gradients[0]("dst", "set", "g", "y", ["a0"], "tmp")
    exec("\n".join(map(render, calls)), names)
    np.testing.assert_allclose(names["y"], out, rtol=1e-15)
    np.testing.assert_allclose(names["dst"], grad, rtol=1e-14)
