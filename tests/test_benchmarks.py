"""The benchmark scripts run and print the JSON figures they promise (tiny sizes; the numbers mean nothing)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "script", ["decode.py", "train.py", "translate.py", "caption.py", "speedups.py", "serve.py", "scale.py", "peers.py"]
)
def test_benchmark_prints_json(script):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout)
    assert isinstance(figures, dict) and figures
