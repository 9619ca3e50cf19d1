"""benchmarks/verl_agent_gigpo.py: the usage errors, which need neither verl nor verl-agent.

The comparison itself needs a verl-agent checkout and an environment with verl, so it is run by
hand (docs/benchmarks.md), never here; these tests only check that the script explains how to
get one and exits 2 before importing torch or verl.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "verl_agent_gigpo.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          check=False, timeout=60)


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], "--verl-agent DIR is required"),
        (["--verl-agent", "{tmp}"], "gigpo/core_gigpo.py not found"),
    ],
)
def test_usage_error_says_how_to_get_verl_agent(tmp_path, argv, expected):
    proc = _run(*(a.format(tmp=tmp_path) for a in argv))
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "git clone https://github.com/langfengQ/verl-agent" in proc.stderr
    assert "benchmarks/verl_agent_gigpo.py --verl-agent" in proc.stderr  # how to run it
    assert proc.stdout == ""
