"""The documentation stays true to the code."""

import re
import subprocess
import sys
from pathlib import Path

import seqgraph as sg
from seqgraph.library import FUNCTIONS

ROOT = Path(__file__).resolve().parents[1]
LANGUAGE = ROOT / "docs" / "language.md"
README = ROOT / "README.md"


def test_generated_reference_is_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_reference.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_every_builtin_and_prelude_cell_is_documented():
    page = LANGUAGE.read_text()
    for function in FUNCTIONS.values():
        assert f"#### `{function.usage()}`" in page
    for cell in ("lstm", "gru", "rnn", "rnn_relu"):
        assert re.search(rf"^cell {cell}\(", page, re.M)


def _sg_blocks(text: str) -> list:
    """The code blocks of a Markdown page that hold a whole model or cell."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M)
    return [b for b in blocks if re.match(r"(#.*\n)*(model|cell) ", b) and "{ ... }" not in b]


def test_walk_through_cell_and_model_check():
    blocks = _sg_blocks(LANGUAGE.read_text())
    cell = next(b for b in blocks if b.startswith("cell MGU"))
    model = next(b for b in blocks if b.startswith("model Adding"))
    program = sg.parse(cell + model, "mgu.sg")
    assert set(program.model().params) >= {"MGU_0.W_f", "MGU_0.b_f", "MGU_0.W_h", "MGU_0.b_h"}
    assert program.model().params["MGU_0.W_f"][0] == (16, 18)


def test_readme_models_check():
    blocks = _sg_blocks(README.read_text())
    assert blocks
    for block in blocks:
        program = sg.parse(block, "README.md")
        assert program.models or program.cells


def test_readme_test_command_is_what_ci_runs():
    readme = README.read_text()
    assert "pip install -e '.[dev]' && pytest" in readme
    assert "pip install . && seqgraph run models/char_lstm.sg" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in ci
    assert ci.strip().splitlines()[-1] == "pip install -e '.[dev]' && pytest"
