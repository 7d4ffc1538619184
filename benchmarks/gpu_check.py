"""The GPU check: what augtrain's GPU paths do on one GPU, in one command (``make gpu-check``).

It installs nothing and needs no network. Each leg runs when what it needs imports and a CUDA
device is present, and otherwise prints one ``skipped:`` line saying why; on a CPU machine every
GPU leg is skipped and the command still runs to its end (exit status 0). Legs:

1. environment: torch and its CUDA, the device, bf16, and which of ray, deepspeed, nvidia.dali
   and transformers import;
2. the ``gpu``-marked tests (``pytest -m gpu``), when pytest imports;
3. DALI augmentation on the GPU against the same graph on the CPU, on the same JPEGs:
   images/s of each and their ratio (policies basic and rand-n2-m9, 224 px);
4. MAE ViT-B/16 pretraining at 224 px in bf16 on one GPU: samples/s and model FLOPs
   utilisation (the FLOPs of one training step counted by ``torch.utils.flop_counter``, over the
   device's dense bf16 peak), through DeepSpeed when it imports, else the same step in plain
   torch (said so);
5. the GPU data path's wait: ``augtrain pretrain`` (Ray Data reading JPEG shards, DALI in the train
   worker, DeepSpeed, MAE ViT-B/16) for a few dozen steps, and the fraction of step time its
   worker waited for data (``data_wait`` in metrics.csv), when ray, deepspeed and DALI import.

On a machine where augtrain is not installed (a bare GPU machine with torch and transformers),
the repository is put on the import path as the ``augtrain`` package without installing it.
docs/gpu.md says how to bring Ray, DeepSpeed and DALI to such a machine as wheels.

    python benchmarks/gpu_check.py [--quick] [--out runs/gpu-check]

The figures go to ``OUT/gpu-check.json`` beside the printed lines.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("augment", "cluster", "models", "pipelines", "tune")
# dense bf16 tensor-core peaks (FLOP/s) by device-name fragment, from the vendors' data sheets
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "GH200": 989e12, "A100": 312e12,
             "L40S": 362e12, "L4": 121e12, "A10G": 70e12, "A10": 125e12, "RTX 4090": 165e12}


def say(line: str) -> None:
    print(line, flush=True)


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def ensure_augtrain() -> str:
    """``augtrain`` importable: installed, or the repository mapped as the package (no install)."""
    if importable("augtrain"):
        return "installed"
    shim = Path(tempfile.mkdtemp(prefix="augtrain-path-")) / "augtrain"
    shim.mkdir()
    (shim / "__init__.py").write_text("")
    for name in PACKAGES:
        (shim / name).symlink_to(REPO / name)
    sys.path.insert(0, str(shim.parent))
    return f"from the repository ({shim} -> {REPO})"


SMOKE = False  # --cpu-smoke: every leg on the CPU at toy sizes, to exercise the code where no GPU is


def cuda_device():
    import torch

    if SMOKE:
        return torch.device("cpu")
    return torch.device("cuda", 0) if torch.cuda.is_available() else None


def peak_flops(name: str) -> float | None:
    return next((flops for key, flops in PEAK_BF16.items() if key in name), None)


# ---------------------------------------------------------------------------------------- legs


def leg_environment(report: dict) -> None:
    import torch

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": None, "bf16": False,
           "modules": {m: importable(m) for m in ("ray", "deepspeed", "nvidia.dali", "transformers", "pytest")}}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name(0)
        env["bf16"] = bool(torch.cuda.is_bf16_supported())
        env["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    report["environment"] = env
    say(f"torch {env['torch']} (CUDA {env['cuda']}); device: {env['device'] or 'none (CPU only)'}"
        + (f", {env['memory_gib']} GiB, bf16 {env['bf16']}" if env["device"] else ""))
    say("imports: " + ", ".join(f"{m} {'yes' if ok else 'no'}" for m, ok in env["modules"].items()))


def leg_gpu_tests(report: dict, timeout: int) -> None:
    if not importable("pytest"):
        say("skipped: gpu tests: pytest not importable")
        return
    if cuda_device() is None:
        say("skipped: gpu tests: no CUDA device (they skip themselves on this machine)")
        return
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    report["gpu_tests"] = {"returncode": proc.returncode, "summary": tail, "seconds": time.perf_counter() - start}
    say(f"gpu tests: {tail} (exit {proc.returncode})")
    if proc.returncode not in (0, 5):
        say("\n".join(proc.stdout.strip().splitlines()[-30:]))


def leg_dali(report: dict, images: int) -> None:
    if not importable("nvidia.dali"):
        say("skipped: DALI GPU vs CPU: nvidia.dali not importable")
        return
    if cuda_device() is None:
        say("skipped: DALI GPU vs CPU: no CUDA device")
        return
    import numpy as np

    sys.path.insert(0, str(REPO / "benchmarks"))
    from augment_throughput import leg_dali as dali_leg
    from augment_throughput import make_jpegs

    with tempfile.TemporaryDirectory() as tmp:
        encoded = [np.fromfile(p, dtype=np.uint8) for p in make_jpegs(images, tmp)]
    results = {}
    for policy in ("basic", "rand-n2-m9"):
        cpu, gpu = dali_leg("cpu", policy, encoded, 32), dali_leg("cpu" if SMOKE else "gpu", policy, encoded, 32)
        results[policy] = {"cpu_images_per_s": cpu["images_per_s"], "gpu_images_per_s": gpu["images_per_s"],
                           "ratio": gpu["images_per_s"] / cpu["images_per_s"]}
        say(f"DALI {policy}{' (CPU smoke: both legs on the CPU)' if SMOKE else ''}: GPU {gpu['images_per_s']:.0f} "
            f"images/s, CPU (1 thread) {cpu['images_per_s']:.0f} "
            f"images/s: x{results[policy]['ratio']:.1f} ({images} JPEGs, 224 px)")
    report["dali"] = results


def _mae_model():
    from augtrain.models import create_objective

    if SMOKE:
        return create_objective("mae", encoder="vit-micro", encoder_kwargs={"image_size": 32, "patch_size": 8})
    return create_objective("mae", encoder="vit-base", encoder_kwargs={"image_size": 224, "patch_size": 16})


def _step_flops(model, batch) -> float:
    """FLOPs of one forward and backward pass of ``model`` on ``batch`` (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model([batch]).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def leg_mae(report: dict, batch_size: int, steps: int) -> None:
    device = cuda_device()
    if device is None:
        say("skipped: MAE ViT-B/16 bf16 pretraining: no CUDA device")
        return
    import torch

    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    side = 32 if SMOKE else 224
    model = _mae_model().to(device)
    batch = torch.randn(batch_size, 3, side, side, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        flops = _step_flops(model, batch)
    engine_name = "deepspeed" if importable("deepspeed") else "torch"
    if engine_name == "deepspeed":
        from augtrain.pipelines.train.engine import EngineConfig, build_engine, train_step

        engine = build_engine(model, EngineConfig(zero_stage=0, device=device.type, precision="bf16",
                                                  micro_batch_size=batch_size, total_steps=steps + 5))

        def step() -> None:
            train_step(engine, [batch])
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1.5e-4, fused=device.type == "cuda")

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = model([batch])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2 if SMOKE else 5):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / steps
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    peak = peak_flops(name)
    result = {"engine": engine_name, "batch": batch_size, "samples_per_s": batch_size / seconds,
              "step_tflops": flops / 1e12, "achieved_tflops_per_s": flops / seconds / 1e12,
              "peak_tflops_per_s": peak / 1e12 if peak else None, "mfu": flops / seconds / peak if peak else None,
              "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
    report["mae_vit_b16"] = result
    mfu = f"MFU {100 * result['mfu']:.1f} % of {result['peak_tflops_per_s']:.0f} TFLOP/s" if peak else \
        f"MFU unknown (no bf16 peak on record for {name!r})"
    what = "MAE ViT-micro 32 px (CPU smoke: not a measurement)" if SMOKE else "MAE ViT-B/16 224 px"
    memory = f", peak memory {result['peak_memory_gib']:.1f} GiB" if result["peak_memory_gib"] else ""
    say(f"{what} bf16 ({engine_name}{'' if engine_name == 'deepspeed' else ', DeepSpeed not importable'}"
        f", batch {batch_size}): {result['samples_per_s']:.0f} samples/s, {result['achieved_tflops_per_s']:.2f} "
        f"TFLOP/s achieved, {mfu}{memory}")


def leg_data_wait(report: dict, out: Path, images: int, steps: int) -> None:
    missing = [m for m in ("ray", "deepspeed", "nvidia.dali") if not importable(m)]
    if missing:
        say(f"skipped: GPU data path wait: {', '.join(missing)} not importable")
        return
    if cuda_device() is None:
        say("skipped: GPU data path wait: no CUDA device")
        return
    import csv

    import numpy as np

    sys.path.insert(0, str(REPO / "benchmarks"))
    from augment_throughput import make_jpegs

    from augtrain.pipelines.data.sources import Source
    from augtrain.pipelines.data.writer import WriteOptions, write_shards

    shards = out / "shards"
    if not (shards / "manifest.json").is_file():
        import cv2

        with tempfile.TemporaryDirectory() as tmp:
            pictures = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in make_jpegs(images, tmp)]
        source = Source("gpu-check", ["none"], len(pictures), lambda i: (pictures[i], 0))
        write_shards(source, str(shards), "train", WriteOptions(samples_per_shard=256, format="jpg"))
    run = out / "mae-run"
    size, encoder, batch = (32, {"encoder": "vit-micro", "encoder_kwargs": {"image_size": 32, "patch_size": 8}}, 16) \
        if SMOKE else (224, {"encoder": "vit-base"}, 128)
    config = {"name": "gpu-check-mae", "output": str(run), "data": {"train": str(shards)},
              "augment": {"policy": "mae", "size": size, "placement": "auto"},
              "model": {"objective": "mae", **encoder},
              "engine": {"zero_stage": 0, "micro_batch_size": batch, "base_lr": 1.5e-4, "warmup_fraction": 0.05},
              "loop": {"epochs": 100, "max_steps": steps, "log_every": 1 if SMOKE else 5, "checkpoint_every": 0},
              "cluster": {"workers": 1, "cpus_per_worker": 1 if SMOKE else max(1, (os.cpu_count() or 2) - 2),
                          "use_gpu": not SMOKE}}
    path = out / "mae.yaml"  # JSON is YAML
    path.write_text(json.dumps(config))
    from augtrain.cluster.cli import main as augtrain_main

    status = augtrain_main(["pretrain", "-c", str(path)])
    rows = [r for r in csv.DictReader(open(run / "metrics" / "metrics.csv")) if r["kind"] == "step"] \
        if (run / "metrics" / "metrics.csv").is_file() else []
    waits = [float(r["data_wait"]) for r in rows[2:] if r.get("data_wait")]  # after the first batches
    rates = [float(r["samples_per_s"]) for r in rows[2:] if r.get("samples_per_s")]
    if status != 0 or not waits:
        say(f"GPU data path wait: {'the run failed (exit %d)' % status if status else 'no step metrics'}; "
            f"its log: {run / 'logs'}")
        report["data_wait"] = {"status": status}
        return
    report["data_wait"] = {"mean_fraction": float(np.mean(waits)), "samples_per_s": float(np.mean(rates)),
                           "steps": len(rows)}
    path = "CPU smoke: Ray Data JPEG shards -> augmentation in the read tasks -> DeepSpeed MAE ViT-micro" if SMOKE \
        else "Ray Data JPEG shards -> DALI in the worker -> DeepSpeed MAE ViT-B/16"
    say(f"GPU data path ({path}): data wait "
        f"{100 * np.mean(waits):.1f} % of step time, {np.mean(rates):.0f} samples/s over {len(rows)} logged steps")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/gpu-check")
    parser.add_argument("--quick", action="store_true", help="fewer images and steps (a smoke run)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run every leg on the CPU at toy sizes: exercises the code where no GPU is (its "
                             "figures measure nothing)")
    args = parser.parse_args(argv)
    global SMOKE
    SMOKE = args.cpu_smoke
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    say(f"augtrain: {ensure_augtrain()}")
    report: dict = {}
    legs = [("environment", lambda: leg_environment(report)),
            ("gpu tests", lambda: None if SMOKE else leg_gpu_tests(report, timeout=240)),
            ("DALI", lambda: leg_dali(report, 64 if SMOKE else 256 if args.quick else 1024)),
            ("MAE ViT-B/16", lambda: leg_mae(report, 4 if SMOKE else 64, 2 if SMOKE else 5 if args.quick else 30)),
            ("data path", lambda: leg_data_wait(report, out, 64 if SMOKE else 512 if args.quick else 2048,
                                                10 if SMOKE else 20 if args.quick else 60))]
    for name, leg in legs:
        try:
            leg()
        except Exception as exc:  # a leg that breaks is reported; the others still run
            report.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
            say(f"failed: {name}: {type(exc).__name__}: {exc}")
    report["seconds"] = time.perf_counter() - start
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    say(f"gpu check: {report['seconds']:.0f} s; figures in {out / 'gpu-check.json'}")
    return 1 if report.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
