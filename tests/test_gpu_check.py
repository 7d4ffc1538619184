"""``make gpu-check`` (benchmarks/gpu_check.py) runs to its end on a machine without a GPU, each GPU
leg skipped with a line saying why; and with --cpu-smoke every leg's code runs on the CPU, so a
GPU machine's first run does not find its bugs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the legs run (make gpu-check)")
def test_gpu_check_skips_each_gpu_leg_with_a_line_and_succeeds(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 4 and all("no CUDA device" in line for line in skipped), proc.stdout
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["environment"]["device"] is None and "errors" not in report


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_gpu_check_leg_runs_on_the_cpu_in_smoke_mode(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert set(report) >= {"environment", "dali", "mae_vit_b16", "data_wait"}, report
    assert report["mae_vit_b16"]["step_tflops"] > 0 and report["mae_vit_b16"]["samples_per_s"] > 0
    assert 0.0 <= report["data_wait"]["mean_fraction"] <= 1.0
