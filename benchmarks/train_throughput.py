"""Training throughput, side by side in one run.

Every leg trains in fp32 (the DDP leg is plain torch), so that they compare like with like.

1. The same model, batch and optimizer on 2 ranks (gloo on CPU, NCCL on GPU): augtrain's
   DeepSpeed engine (ZeRO-2) against plain ``torch.nn.parallel.DistributedDataParallel``;
   samples/s of each, in alternating rounds (the machine is noisy), and the ratio.
2. The pretraining loop fed from shards: ``augtrain pretrain`` on Fashion-MNIST shards with 2
   Ray Train workers, the same encoder, per-rank batch and input size as leg 1 (3-channel
   inputs), with the SimCLR augmentation done by Ray Data's read tasks; samples/s and the
   data-wait fraction (time blocked on input / step time) from the run's metrics, and its
   ratio to the DDP leg's samples/s (the goal: at least 0.9).

    .venv/bin/python benchmarks/train_throughput.py [--steps 30] [--rounds 3] [--shards data/fashion-mnist/train]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import sys
import tempfile
import time

import torch
import torch.multiprocessing as mp

WORLD = 2


def _objective(encoder: str):
    from augtrain.models import create_objective

    torch.manual_seed(0)
    return create_objective("simclr", encoder=encoder, encoder_kwargs={"in_chans": 3})


def _batches(n: int, batch: int, size: int, rank: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(rank)
    return [[torch.rand(batch, 3, size, size, generator=g) for _ in range(2)] for _ in range(n)]


def _rank(rank: int, port: int, leg: str, args: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // WORLD))
    import torch.distributed as dist

    model = _objective(args["encoder"])
    data = _batches(4, args["batch"], args["size"], rank)
    if leg == "deepspeed":
        from augtrain.pipelines.train.engine import EngineConfig, build_engine, train_step

        engine = build_engine(model, EngineConfig(zero_stage=2, micro_batch_size=args["batch"], base_lr=1e-3,
                                                  total_steps=10_000, grad_clip=1.0, precision="fp32"))

        def step(views):
            train_step(engine, views)
    else:
        from torch.nn.parallel import DistributedDataParallel

        from augtrain.pipelines.train.engine import init_distributed, resolve_device

        device = resolve_device("auto")
        init_distributed(device)
        ddp = DistributedDataParallel(model.to(device))
        opt = torch.optim.AdamW(ddp.parameters(), lr=1e-3)

        def step(views):
            loss = ddp([v.to(device) for v in views])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
            opt.step()

    for i in range(args["warmup"]):
        step(data[i % len(data)])
    dist.barrier()
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(args["steps"]):
        step(data[i % len(data)])
    dist.barrier()
    seconds = time.perf_counter() - start
    cpu = torch.tensor([time.process_time() - cpu_start], dtype=torch.float64)
    dist.all_reduce(cpu)  # CPU seconds of both ranks: stable where wall time is not
    samples = WORLD * args["batch"] * args["steps"]
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"samples_per_s": samples / seconds, "cpu_ms_per_sample": 1000 * cpu.item() / samples}, f)
    dist.destroy_process_group()
    os._exit(0)  # a DeepSpeed rank may abort in interpreter teardown after all work is done


def run_leg(leg: str, args: dict) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "result.json")
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_rank, args=(r, port, leg, args, out)) for r in range(WORLD)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(600)
        with open(out) as f:
            return json.load(f)


def fed_from_shards(shards: str, steps: int, encoder: str, batch: int, size: int) -> dict:
    """The real pretraining loop on shards (the model and batch of the DDP leg); samples/s and
    data-wait from its metrics."""
    import yaml

    from augtrain.cluster.connect import connect
    from augtrain.pipelines.train.config import parse_config
    from augtrain.pipelines.train.pretrain import plan_pretraining, run_pretraining

    with tempfile.TemporaryDirectory() as out:
        config = parse_config(yaml.safe_load(f"""
            name: bench-data-wait
            output: {out}
            data: {{train: {shards}, channels: 3}}
            augment: {{policy: simclr, size: {size}}}
            model: {{objective: simclr, encoder: {encoder}, encoder_kwargs: {{in_chans: 3}}}}
            engine: {{zero_stage: 2, micro_batch_size: {batch}, base_lr: 1.0e-3, precision: fp32}}
            loop: {{epochs: 1, max_steps: {steps}, log_every: 5}}
            cluster: {{workers: 2, cpus_per_worker: 1, max_failures: 0}}
        """), "bench")
        connect(log_to_driver=False)
        result = run_pretraining(plan_pretraining(config))
        with open(result["metrics"]) as f:
            rows = [r for r in csv.DictReader(f) if r["kind"] == "step"]
    steady = rows[1:] or rows  # the first record includes the first read's start-up
    return {"samples_per_s": statistics.median(float(r["samples_per_s"]) for r in steady),
            "data_wait": statistics.mean(float(r["data_wait"]) for r in steady),
            "data_wait_first": float(rows[0]["data_wait"]), "records": len(rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="resnet-tiny")
    parser.add_argument("--batch", type=int, default=64, help="samples per rank per step (2 views each)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shards", default="data/fashion-mnist/train", help="shards for the data-wait leg ('' skips)")
    parser.add_argument("--loop-steps", type=int, default=60)
    args = parser.parse_args()
    leg_args = {k: getattr(args, k) for k in ("encoder", "batch", "size", "steps", "warmup")}
    runs: dict[str, list[dict]] = {"ddp": [], "deepspeed": []}
    for _ in range(args.rounds):
        for leg in ("ddp", "deepspeed"):
            runs[leg].append(run_leg(leg, leg_args))
            print(f"{leg}: {runs[leg][-1]['samples_per_s']:.0f} samples/s", file=sys.stderr, flush=True)
    print(f"\nSimCLR on {args.encoder}, {WORLD} ranks x {args.batch} samples (2 views of {args.size}x{args.size}), "
          f"{args.steps} timed steps, {args.rounds} alternating rounds (load {os.getloadavg()[0]:.1f})")
    print(f"{'':<20}{'samples/s (median)':>20}{'CPU ms/sample':>16}   samples/s per round")
    for leg, label in (("ddp", "DDP (torch)"), ("deepspeed", "DeepSpeed ZeRO-2")):
        rates = [r["samples_per_s"] for r in runs[leg]]
        cpu = statistics.median(r["cpu_ms_per_sample"] for r in runs[leg])
        print(f"{label:<20}{statistics.median(rates):>20.0f}{cpu:>16.2f}   {[round(x) for x in rates]}")
    paired = [d["samples_per_s"] / p["samples_per_s"] for d, p in zip(runs["deepspeed"], runs["ddp"])]
    cpu_ratio = (statistics.median(r["cpu_ms_per_sample"] for r in runs["ddp"])
                 / statistics.median(r["cpu_ms_per_sample"] for r in runs["deepspeed"]))
    print(f"DeepSpeed / DDP throughput: x{statistics.median(paired):.2f} (median of per-round ratios "
          f"{[round(x, 2) for x in paired]}); by CPU cost per sample: x{cpu_ratio:.2f}")
    if args.shards:
        fed = fed_from_shards(args.shards, args.loop_steps, args.encoder, args.batch, args.size)
        ddp = statistics.median(r["samples_per_s"] for r in runs["ddp"])
        print(f"\npretraining loop fed from {args.shards} (2 Ray Train workers, SimCLR {args.encoder}, "
              f"{args.batch} samples per rank of {args.size}x{args.size}, augmented by Ray Data): "
              f"{fed['samples_per_s']:.0f} samples/s, data wait {100 * fed['data_wait']:.1f}% of step time "
              f"(first record, with the first read's start-up: {100 * fed['data_wait_first']:.0f}%); "
              f"x{fed['samples_per_s'] / ddp:.2f} of the DDP leg's {ddp:.0f} on synthetic tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
