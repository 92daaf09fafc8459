"""A non-editable install works: the wheel carries every module, the grammar and the prelude.

Builds a wheel from a copy of the source, installs it into a fresh virtual environment (which
sees this interpreter's numpy, lark and networkx, whether or not this interpreter runs in a
virtual environment itself), and runs that environment's ``seqgraph`` command from another
directory. Takes 10-30 seconds.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NETWORK_TROUBLE = ("No matching distribution found", "Could not find a version", "NewConnectionError",
                   "Failed to establish a new connection", "Temporary failure in name resolution")


def _run(command, **kwargs):
    return subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          timeout=300, **kwargs)


def _can_build_without_isolation() -> bool:
    """setuptools new enough for this pyproject, and able to make wheels by itself or with
    the ``wheel`` package."""
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(part) for part in re.findall(r"\d+", setuptools.__version__)[:2])
    if (major, minor) < (68, 0):
        return False
    if (major, minor) >= (70, 1):
        return True
    try:
        import wheel  # noqa: F401
    except ImportError:
        return False
    return True


def _copy_source(target: Path) -> Path:
    """The files a wheel is built from, without build leftovers, so nothing is written into
    the working tree."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    for name in ("seqgraph", "grammars"):
        shutil.copytree(ROOT / name, target / name, ignore=ignore)
    return target


def _build_wheel(source: Path, out: Path) -> Path:
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
               "-q", "-w", out]
    if _can_build_without_isolation():
        command.append("--no-build-isolation")
    result = _run(command + [source])
    if result.returncode != 0:
        if "--no-build-isolation" not in command and any(t in result.stderr for t in NETWORK_TROUBLE):
            pytest.skip("building a wheel needs setuptools>=68 and wheel, or a package index")
        pytest.fail(f"building the wheel failed:\n{result.stdout}\n{result.stderr}")
    wheels = list(out.glob("seqgraph-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_installed_wheel_finds_grammar_and_prelude(tmp_path):
    source = _copy_source(_mkdir(tmp_path / "src"))
    wheel = _build_wheel(source, _mkdir(tmp_path / "wheels"))

    venv = tmp_path / "venv"
    result = _run([sys.executable, "-m", "venv", venv])
    assert result.returncode == 0, result.stderr
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    _see_these_packages(python)
    result = _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                   "--disable-pip-version-check", wheel])
    assert result.returncode == 0, result.stderr

    elsewhere = _mkdir(tmp_path / "elsewhere")
    model = elsewhere / "char_lstm.sg"
    shutil.copy2(ROOT / "models" / "char_lstm.sg", model)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

    where = _run([python, "-c", "import seqgraph; print(seqgraph.__file__)"], cwd=elsewhere, env=env)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve()), where.stdout
    installed = Path(where.stdout.strip()).resolve().parent
    modules = [path.relative_to(ROOT / "seqgraph") for path in (ROOT / "seqgraph").rglob("*.py")
               if "__pycache__" not in path.parts]
    assert [str(m) for m in modules if not (installed / m).is_file()] == []  # every subpackage listed

    result = _run([bindir / "seqgraph", "check", model.name], cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stderr
    assert "char_lstm.sg: ok" in result.stdout
    assert "lstm_1.weight_hh" in result.stdout and "222,285" in result.stdout


def _see_these_packages(python: Path) -> None:
    """Let the environment of ``python`` import what this interpreter imports, from where it
    does: a virtual environment made with --system-site-packages sees its base interpreter's
    packages, not those of a virtual environment it was made from. The checkout is left out,
    so only the installed wheel can be imported as seqgraph."""
    found = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    assert found.returncode == 0, found.stderr
    checkout = {ROOT.resolve(), (ROOT / "tests").resolve()}
    paths = [p for p in sys.path if p and Path(p).is_dir() and Path(p).resolve() not in checkout]
    (Path(found.stdout.strip()) / "outer_packages.pth").write_text("\n".join(paths) + "\n")


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path
