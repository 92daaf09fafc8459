"""Distilling a trained teacher (models/distill_teacher.sg into models/distill.sg): the
student run starts from the teacher's checkpoint (train setting ``init``), trains its own
layers only, and leaves the teacher's as they were."""

from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.train.checkpoint import read_params
from seqgraph.train.run import run

MODELS = Path(__file__).resolve().parents[2] / "models"
STUDENT, TEACHER_FILE = MODELS / "distill.sg", MODELS / "distill_teacher.sg"
QUIET = {"progress": False, "echo": lambda *a, **k: None}
TEACHER = {"teacher_hidden.weight", "teacher_hidden.bias", "teacher_out.weight", "teacher_out.bias"}


def test_the_student_trains_its_own_layers_only():
    net = sg.compile(sg.load(STUDENT).model(), dtype="float64")
    assert TEACHER <= set(net.params) and not TEACHER & set(net.trained)
    assert {"dense_0.weight", "dense_1.bias"} <= set(net.trained)


def test_a_student_run_starts_from_the_teacher_and_keeps_it(tmp_path):
    small = ["examples = 600", "steps = 4"]
    run(TEACHER_FILE, epochs=1, out=tmp_path / "teacher", settings=small, **QUIET)
    teacher, _ = read_params(tmp_path / "teacher")
    student = run(STUDENT, epochs=1, out=tmp_path / "student",
                  settings=small + [f'init = "{tmp_path / "teacher"}"'], **QUIET)
    for key in TEACHER:
        np.testing.assert_array_equal(student.net.backend.to_host(student.net.params[key]), teacher[key])
    assert not np.allclose(student.net.params["dense_0.weight"], sg.compile(student.net.model).params["dense_0.weight"])


def test_an_init_file_sharing_no_layer_is_an_error(tmp_path):
    run(TEACHER_FILE, epochs=1, out=tmp_path / "teacher", settings=["examples = 300", "steps = 1"], **QUIET)
    with pytest.raises(sg.SeqgraphError) as caught:
        run(MODELS / "digits_cnn.sg", epochs=1, out=tmp_path / "cnn",
            settings=["examples = 300", "steps = 1", f'init = "{tmp_path / "teacher"}"'], **QUIET)
    assert "holds no parameter of model DigitsCNN" in caught.value.render()
