"""The project's pytest settings leave pytest's closing ``N passed`` line in place, with or
without ``-q`` (CI's log ends with it)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("options", [[], ["-q"]], ids=["plain", "quiet"])
def test_the_closing_line_says_how_many_passed(tmp_path, options):
    (tmp_path / "test_two.py").write_text("def test_one():\n    assert 1\n\n\ndef test_two():\n    assert 2\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir",
                             str(tmp_path), "-p", "no:cacheprovider", *options, str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^=* ?2 passed in [\d.]+s ?=*$", result.stdout.rstrip().splitlines()[-1]), result.stdout
