"""``benchmarks/gpu_check.py`` (issue 13, Devices) runs everywhere: without CUDA it says so in one line and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_without_cuda_prints_one_line_and_exits_0():
    hidden = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}  # no GPU, even where one exists
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=hidden, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA GPU"), done.stdout
