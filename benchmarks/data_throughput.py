"""Data-path throughput, side by side in one run: augtrain's reader against the usual options.

Every leg reads the same 224x224 JPEG WebDataset shards and produces the same output, float32
``[64, 3, 224, 224]`` batches after decode + random-resized-crop (scale 0.2-1) + horizontal
flip + ImageNet normalisation:

* ``augtrain``: Ray Data read tasks decode and augment (the ``mae`` policy), the consumer
  normalises the uint8 batch in torch (``augtrain.augment.normalize_batch``);
* ``dataloader``: ``webdataset.WebDataset`` + ``torch.utils.data.DataLoader`` (same number of
  workers), OpenCV decode + albumentations in the workers;
* ``dali``: DALI's own ``fn.readers.webdataset`` with CPU operators (``device_id=None``), decode
  then random-resized crop;
* ``dali-roi``: the same with the crop fused into the decoder (``fn.decoders.image_random_crop``,
  which decodes only the crop window where libjpeg-turbo allows), then resize;
* ``limit``: OpenCV decode + the same albumentations ops in one plain loop, no framework.

Each leg runs in its own process: one warm-up pass, then timed passes. Reported per leg: wall
images/s and CPU milliseconds per image of the whole process tree (sampled every 0.1 s over the
timed window: the driver, Ray's raylet/GCS/workers, DataLoader workers), which is stable on a
noisy machine while wall time is not; and the peak memory of the tree, both as summed RSS and as summed
PSS (shared pages, such as Ray's object store, counted once). Usage::

    .venv/bin/python benchmarks/data_throughput.py [--images 2048] [--passes 2] [--workers 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

LEGS = ("augtrain", "dataloader", "dali", "dali-roi", "limit")
SIZE, SCALE, BATCH = 224, (0.2, 1.0), 64
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


# --------------------------------------------------------------------------- data


def make_shards(out: str, images: int, per_shard: int) -> str:
    """224x224 JPEG crops of the real photos scikit-learn ships, written as augtrain shards."""
    import cv2
    from sklearn.datasets import load_sample_images

    from augtrain.pipelines.data.writer import WriteOptions, write_shards
    from augtrain.pipelines.data.sources import Source

    photos = load_sample_images().images
    rng = np.random.default_rng(0)

    def item(i: int):
        photo = photos[i % len(photos)]
        side = int(rng.integers(160, min(photo.shape[:2]) + 1))
        y, x = int(rng.integers(0, photo.shape[0] - side + 1)), int(rng.integers(0, photo.shape[1] - side + 1))
        return cv2.resize(photo[y : y + side, x : x + side], (SIZE, SIZE), interpolation=cv2.INTER_AREA), i % 10

    source = Source("sample-photos", [str(c) for c in range(10)], images, item)
    write_shards(source, out, "train", WriteOptions(samples_per_shard=per_shard, format="jpg", dali_index=True,
                                                    shuffle_seed=None), progress=lambda _: None)
    return out


# --------------------------------------------------------------------------- CPU of a process tree


class TreeCPU:
    """CPU seconds used by this process and all its descendants over a window (sampled)."""

    def __init__(self, interval: float = 0.1) -> None:
        import psutil

        self._psutil, self._me = psutil, psutil.Process()
        self._first: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._interval = interval
        self.peak_rss = 0
        self.peak_pss = 0

    def _sample(self) -> None:
        rss = pss = 0
        for proc in [self._me, *self._me.children(recursive=True)]:
            try:
                key = (proc.pid, proc.create_time())
                times = proc.cpu_times()
                rss += proc.memory_info().rss
                pss += _pss(proc.pid)
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):  # _pss handles its own
                continue
            self._last[key] = times.user + times.system
            self._first.setdefault(key, 0.0 if self._started else self._last[key])
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)

    def __enter__(self) -> "TreeCPU":
        self._started = False
        self._sample()
        self._started = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self._last[k] - self._first[k] for k in self._last)


def _pss(pid: int) -> int:
    """Proportional set size in bytes (Linux): shared pages divided among the processes that map
    them. Summed RSS counts a page once per process mapping it, as Ray's shared-memory object
    store is mapped by the driver and every worker; summed PSS counts it once."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


# --------------------------------------------------------------------------- legs


def albumentations_ops():
    import albumentations as A

    return A.Compose([A.RandomResizedCrop(size=(SIZE, SIZE), scale=SCALE), A.HorizontalFlip(p=0.5),
                      A.Normalize()])


def decode_rgb(data: bytes) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)


def leg_limit(urls: list[str], workers: int):
    import tarfile

    import cv2
    import torch

    cv2.setNumThreads(1)
    ops = albumentations_ops()

    def one_pass():
        batch, labels = [], []
        for url in urls:
            with tarfile.open(url) as tar:
                members = {m.name: m for m in tar.getmembers()}
                for name in sorted(n for n in members if n.endswith(".jpg")):
                    image = ops(image=decode_rgb(tar.extractfile(members[name]).read()))["image"]
                    batch.append(image.transpose(2, 0, 1))
                    labels.append(int(tar.extractfile(members[name[:-4] + ".cls"]).read()))
                    if len(batch) == BATCH:
                        yield torch.from_numpy(np.stack(batch)), torch.tensor(labels)
                        batch, labels = [], []
        if batch:
            yield torch.from_numpy(np.stack(batch)), torch.tensor(labels)

    return lambda epoch: one_pass()


def leg_dataloader(urls: list[str], workers: int):
    import cv2
    import torch
    import webdataset as wds

    cv2.setNumThreads(1)
    ops = albumentations_ops()

    def sample(s):
        return ops(image=decode_rgb(s["jpg"]))["image"].transpose(2, 0, 1), int(s["cls"])

    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(sample)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=workers, persistent_workers=True)
    return lambda epoch: iter(loader)


def _dali_leg(urls: list[str], workers: int, fused: bool):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

    @pipeline_def(batch_size=BATCH, num_threads=workers, device_id=None, seed=0)
    def pipe():
        jpg, cls = fn.readers.webdataset(paths=urls, index_paths=[u[:-4] + ".idx" for u in urls], ext=["jpg", "cls"],
                                         name="reader", missing_component_behavior="error")
        if fused:  # decode only the crop window, then resize it
            images = fn.decoders.image_random_crop(jpg, device="cpu", output_type=types.RGB, random_area=SCALE)
            images = fn.resize(images, size=(SIZE, SIZE))
        else:
            images = fn.decoders.image(jpg, device="cpu", output_type=types.RGB)
            images = fn.random_resized_crop(images, size=(SIZE, SIZE), random_area=SCALE)
        images = fn.crop_mirror_normalize(images, mirror=fn.random.coin_flip(), mean=MEAN.tolist(), std=STD.tolist(),
                                          dtype=types.FLOAT, output_layout="CHW")
        return images, cls

    pipeline = pipe()
    pipeline.build()
    loader = DALIGenericIterator(pipeline, ["image", "cls"], reader_name="reader", auto_reset=True,
                                 last_batch_policy=LastBatchPolicy.PARTIAL)
    return lambda epoch: ((b[0]["image"], b[0]["cls"]) for b in loader)


def leg_dali(urls: list[str], workers: int):
    return _dali_leg(urls, workers, fused=False)


def leg_dali_roi(urls: list[str], workers: int):
    return _dali_leg(urls, workers, fused=True)


def leg_augtrain(urls: list[str], workers: int):
    import ray
    import torch

    from augtrain.augment import IMAGENET_MEAN, IMAGENET_STD, make_sample_transform, normalize_batch
    from augtrain.pipelines.data.decode import DecodeSpec
    from augtrain.pipelines.data.reader import ReaderConfig, ShardReader
    from augtrain.pipelines.data.shard_set import open_shards

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    reader = ShardReader(open_shards(urls), ReaderConfig(seed=0, decode=DecodeSpec(channels=3)),
                         make_sample_transform("mae", size=SIZE))

    def one_pass(epoch):
        for batch in reader.epoch_iterator(epoch, 0, 1, BATCH):
            yield normalize_batch(torch.from_numpy(batch["image"]), IMAGENET_MEAN, IMAGENET_STD), torch.from_numpy(batch["label"])

    return one_pass


def run_leg(name: str, urls: list[str], workers: int, passes: int) -> dict:
    epoch_fn = globals()[f"leg_{name.replace('-', '_')}"](urls, workers)
    start = time.perf_counter()
    warm = sum(len(x) for x, _ in epoch_fn(0))
    cold = time.perf_counter() - start
    images = 0
    with TreeCPU() as cpu:
        start = time.perf_counter()
        for epoch in range(1, passes + 1):
            for x, _ in epoch_fn(epoch):
                assert x.shape[1:] == (3, SIZE, SIZE) and x.dtype.is_floating_point, x.shape
                images += len(x)
        wall = time.perf_counter() - start
    return {"leg": name, "images": images, "warm_images": warm, "cold_s": cold, "wall_s": wall,
            "images_per_s": images / wall, "cpu_ms_per_image": 1000 * cpu.seconds / images,
            "peak_rss_mib": cpu.peak_rss / 2**20, "peak_pss_mib": cpu.peak_pss / 2**20}


# --------------------------------------------------------------------------- driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--per-shard", type=int, default=256)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="worker processes/threads/read tasks per leg")
    parser.add_argument("--runs", type=int, default=1, help="run every leg this many times, legs interleaved; "
                        "the table shows each leg's median run (by images/s)")
    parser.add_argument("--legs", default=",".join(LEGS))
    parser.add_argument("--data", default=None, help="reuse shards written earlier by this benchmark")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--leg", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.leg:  # child process: one leg
        urls = sorted(os.path.join(args.data, n) for n in os.listdir(args.data) if n.endswith(".tar"))
        print(json.dumps(run_leg(args.leg, urls, args.workers, args.passes)))
        return 0

    with tempfile.TemporaryDirectory(prefix="augtrain-bench-") as tmp:
        data = args.data or make_shards(os.path.join(tmp, "shards"), args.images, args.per_shard)
        runs: dict[str, list[dict]] = {}
        for run in range(args.runs):
            for leg in args.legs.split(","):
                cmd = [sys.executable, __file__, "--leg", leg, "--data", data, "--workers", str(args.workers),
                       "--passes", str(args.passes)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                if proc.returncode != 0 or not lines:
                    print(f"{leg}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}", file=sys.stderr)
                    continue
                runs.setdefault(leg, []).append(json.loads(lines[-1]))
                print(f"run {run + 1}/{args.runs} {leg}: {runs[leg][-1]['images_per_s']:.0f} images/s, "
                      f"{runs[leg][-1]['cpu_ms_per_image']:.2f} CPU ms/image", file=sys.stderr, flush=True)
    results = [median_run(legs) for legs in runs.values()]
    report(results, args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results, "runs": runs}, f, indent=2)
    return 0


def median_run(runs: list[dict]) -> dict:
    """The run with the median images/s, with every run's figures beside it."""
    ordered = sorted(runs, key=lambda r: r["images_per_s"])
    out = dict(ordered[(len(ordered) - 1) // 2])
    out["all_images_per_s"] = [r["images_per_s"] for r in runs]
    out["all_cpu_ms_per_image"] = [r["cpu_ms_per_image"] for r in runs]
    return out


def report(results: list[dict], args: argparse.Namespace) -> None:
    by = {r["leg"]: r for r in results}
    print(f"\n{args.images} JPEG 224x224, decode + random-resized-crop + flip + normalize, batch {BATCH}, "
          f"{args.workers} workers, {args.passes} timed passes after 1 warm-up, median of {args.runs} run(s) "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"{'leg':<11}{'images/s':>10}{'CPU ms/img':>12}{'peak RSS MiB':>14}{'peak PSS MiB':>14}{'first pass s':>14}")
    for r in results:
        print(f"{r['leg']:<11}{r['images_per_s']:>10.0f}{r['cpu_ms_per_image']:>12.2f}{r['peak_rss_mib']:>14.0f}"
              f"{r.get('peak_pss_mib', float('nan')):>14.0f}{r['cold_s']:>14.1f}")
    print("(RSS and PSS summed over the leg's process tree; PSS counts a shared page once, RSS once per process)")
    if "augtrain" in by:
        a = by["augtrain"]
        print("\nratios (augtrain / other):")
        for other in ("dataloader", "dali", "dali-roi", "limit"):
            if other in by:
                o = by[other]
                print(f"  vs {other:<11} CPU ms/img x{a['cpu_ms_per_image'] / o['cpu_ms_per_image']:.2f}   "
                      f"images/s x{a['images_per_s'] / o['images_per_s']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
