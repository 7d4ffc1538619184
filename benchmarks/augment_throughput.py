"""CPU cost and throughput of augmentation backends on 224x224 JPEGs, side by side.

Legs (each: decode + the policy's ops, uint8 out, one thread, same images):
  albumentations   augtrain's default CPU path (per sample, as in the Ray Data read task)
  numpy            augtrain's numpy/cv2 reference ops
  dali-cpu         augtrain's DALI graph with CPU operators (device_id=None), batches of 32
  dali-gpu         the same graph on the GPU with nvJPEG decode (only when CUDA is present)
  torchvision-v2   the outside reference: torchvision.transforms.v2 with the same ops, run by
                   another interpreter (--torchvision-python) since torchvision needs its own torch

Policies: basic, rand-n2-m9, simclr (two views per image; costs are per source image).

    python benchmarks/augment_throughput.py --torchvision-python /tmp/tvenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

POLICIES = ("basic", "rand-n2-m9", "simclr")
SIZE = 224
DALI_BATCH = 32


def make_jpegs(n: int, out_dir: str, seed: int = 0) -> list[str]:
    """``n`` 224x224 JPEGs (quality 90) cut from scikit-learn's and scikit-image's sample photos."""
    import cv2
    from sklearn.datasets import load_sample_images

    photos = list(load_sample_images().images)
    try:
        from skimage import data

        photos += [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    except ImportError:
        pass
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        tile = cv2.resize(photo[y : y + side, x : x + side], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        path = os.path.join(out_dir, f"{i:05d}.jpg")
        cv2.imwrite(path, cv2.cvtColor(tile, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def _timed(run, n: int) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"cpu_ms_per_image": 1000.0 * cpu / n, "images_per_s": n / wall}


def leg_augtrain(backend: str, policy: str, encoded: list[np.ndarray], warmup: int) -> dict:
    """Per-sample decode (cv2, as the reader does) + augtrain transform."""
    import cv2

    from augtrain.augment import make_sample_transform
    from augtrain.pipelines.modalities.image import decode_image

    cv2.setNumThreads(1)
    views = 2 if policy == "simclr" else 1
    transform = make_sample_transform(policy, size=SIZE, views=views, backend=backend)
    rng = np.random.default_rng(0)

    def run(items):
        for data in items:
            transform(decode_image(data.tobytes(), 3), rng)

    run(encoded[:warmup])
    return _timed(lambda: run(encoded), len(encoded))


def leg_dali(device: str, policy: str, encoded: list[np.ndarray], warmup: int) -> dict:
    """augtrain's DALI graph on batches of encoded JPEGs (decode inside DALI)."""
    from augtrain.augment.image.dali_backend import DaliBatchAugmenter

    views = 2 if policy == "simclr" else 1
    aug = DaliBatchAugmenter(policy, size=SIZE, views=views, batch_size=DALI_BATCH, device=device, num_threads=1)
    rng = np.random.default_rng(0)
    sync = _cuda_sync if device == "gpu" else (lambda: None)

    def run(items):
        for i in range(0, len(items), DALI_BATCH):
            aug(items[i : i + DALI_BATCH], rng)
        sync()

    run(encoded[: max(warmup, DALI_BATCH)])
    return _timed(lambda: run(encoded), len(encoded))


def _cuda_sync() -> None:
    import torch

    torch.cuda.synchronize()


# --------------------------------------------------------------------------- torchvision leg
# Runs in another interpreter: imports only torch/torchvision/numpy.


def _torchvision_transform(policy: str):
    from torchvision.transforms import v2

    if policy == "basic":
        return v2.Compose([
            v2.RandomResizedCrop(SIZE, scale=(0.35, 1.0), antialias=False),
            v2.RandomHorizontalFlip(0.5),
            v2.RandomVerticalFlip(0.1),
            v2.RandomApply([v2.RandomRotation(9, fill=128)], p=0.3),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(0.1),
            v2.RandomApply([v2.GaussianBlur(7, sigma=(0.1, 1.05))], p=0.1),
        ])  # fmt: skip
    if policy == "rand-n2-m9":
        return v2.RandAugment(num_ops=2, magnitude=9, fill=128)
    if policy == "simclr":
        return v2.Compose([
            v2.RandomResizedCrop(SIZE, scale=(0.08, 1.0), antialias=False),
            v2.RandomHorizontalFlip(0.5),
            v2.RandomApply([v2.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
            v2.RandomGrayscale(0.2),
            v2.RandomApply([v2.GaussianBlur(13, sigma=(0.1, 2.0))], p=0.5),
        ])  # fmt: skip
    raise ValueError(f"no torchvision equivalent for {policy!r}")


def leg_torchvision(policy: str, paths: list[str], warmup: int) -> dict:
    """torchvision.io.decode_jpeg + transforms.v2 on uint8 tensors."""
    import torch
    from torchvision.io import decode_jpeg, read_file

    torch.set_num_threads(1)
    torch.manual_seed(0)
    transform = _torchvision_transform(policy)
    views = 2 if policy == "simclr" else 1
    encoded = [read_file(p) for p in paths]

    def run(items):
        for data in items:
            image = decode_jpeg(data)
            for _ in range(views):
                transform(image)

    run(encoded[:warmup])
    out = _timed(lambda: run(encoded), len(encoded))
    out["versions"] = {"torch": torch.__version__, "torchvision": __import__("torchvision").__version__}
    return out


# --------------------------------------------------------------------------- driver


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def run_all(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="augbench-") as tmp:
        paths = make_jpegs(args.images, tmp)
        encoded = [np.fromfile(p, dtype=np.uint8) for p in paths]
        results: dict[str, dict[str, dict]] = {p: {} for p in args.policies}
        for policy in args.policies:
            for backend in ("albumentations", "numpy"):
                results[policy][backend] = leg_augtrain(backend, policy, encoded, args.warmup)
            results[policy]["dali-cpu"] = leg_dali("cpu", policy, encoded, args.warmup)
            if _cuda():
                results[policy]["dali-gpu"] = leg_dali("gpu", policy, encoded, args.warmup)
            if args.torchvision_python:
                cmd = [args.torchvision_python, os.path.abspath(__file__), "--leg", "torchvision", "--policy", policy,
                       "--warmup", str(args.warmup), "--paths", *paths]  # fmt: skip
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
                if proc.returncode == 0:
                    results[policy]["torchvision-v2"] = json.loads(proc.stdout.strip().splitlines()[-1])
                else:
                    results[policy]["torchvision-v2"] = {"error": proc.stderr.strip().splitlines()[-1][:200]}
        return results


def print_table(results: dict, images: int) -> None:
    print(f"\n{images} JPEGs 224x224, decode + ops, uint8 out, 1 thread; CPU ms = process CPU time per source image")
    print(f"{'policy':12s} {'backend':16s} {'CPU ms/img':>10s} {'img/s':>8s} {'vs torchvision':>15s} {'vs albumentations':>18s}")
    for policy, legs in results.items():
        ref = legs.get("torchvision-v2", {}).get("cpu_ms_per_image")
        albu = legs["albumentations"]["cpu_ms_per_image"]
        for name, r in legs.items():
            if "error" in r:
                print(f"{policy:12s} {name:16s} error: {r['error']}")
                continue
            ms = r["cpu_ms_per_image"]
            vs_tv = f"{ms / ref:.2f}x" if ref else "-"
            print(f"{policy:12s} {name:16s} {ms:10.2f} {r['images_per_s']:8.0f} {vs_tv:>15s} {ms / albu:17.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES))
    parser.add_argument("--torchvision-python", default=None, help="interpreter with torch + torchvision installed")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--leg", choices=["torchvision"], help=argparse.SUPPRESS)
    parser.add_argument("--policy", help=argparse.SUPPRESS)
    parser.add_argument("--paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.leg == "torchvision":
        print(json.dumps(leg_torchvision(args.policy, args.paths, args.warmup)))
        return 0
    results = run_all(args)
    print_table(results, args.images)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
