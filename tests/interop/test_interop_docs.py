"""The Python examples of docs/interop.md run as written, in order, in one namespace."""

import os
import re
from pathlib import Path

import pytest

from seqgraph.cli import main

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "interop.md"


def test_the_python_examples_run(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    pytest.importorskip("onnxruntime")
    blocks = re.findall(r"^```python\n(.*?)^```", PAGE.read_text(), re.S | re.M)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], "interop.md: PyTorch tagger", "exec"), namespace)
    safetensors_torch.save_file(torch.nn.GRU(4, 5).double().state_dict(), "gru.safetensors")
    exec(compile(blocks[1], "interop.md: state dict files", "exec"), namespace)
    assert sorted(safetensors_torch.load_file("gru_trained.safetensors")) == \
        sorted(torch.nn.GRU(4, 5).state_dict())
    assert main(["export", str(ROOT / "models" / "gru_tagger.sg"), "-o", "tagger.onnx"]) == 0
    exec(compile(blocks[2], "interop.md: ONNX Runtime", "exec"), namespace)
    assert namespace["pred"].shape == (7, 3, 10)
    assert os.path.exists("tagger.onnx")
