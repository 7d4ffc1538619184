"""fp32 against bf16 training steps of the shipped image encoders, side by side in one run.

The same model, batch and AdamW step on one CPU thread (or the GPU when there is one), in
alternating rounds (the machine is noisy), three ways: fp32 in the default memory layout, fp32
channels-last, and bf16 the way augtrain runs it where ``precision: auto`` picks bf16 (autocast of
the forward pass, channels-last tensors; weights, optimizer and loss in fp32). Prints images/s of
each, the ratios to plain fp32, and what this machine's ``auto`` resolves to (bf16 on a CPU with
native bf16 arithmetic, AMX or AVX512-BF16; a CUDA device with bf16).

    .venv/bin/python benchmarks/precision.py [--encoders cnn-small efficientnet-lite0@64] [--batch 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


VARIANTS = {"fp32": (False, False), "fp32 channels-last": (False, True), "bf16 channels-last": (True, True)}


def _step_fn(encoder: str, bf16: bool, channels_last: bool, batch: int, size: int, device: torch.device):
    from augtrain.models import create_model

    torch.manual_seed(0)
    model = create_model(encoder, in_chans=1).to(device)
    head = torch.nn.Linear(model.num_features, 10).to(device)
    params = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    x = torch.rand(batch, 1, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = head(model(x)).float()
        loss = torch.nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", nargs="+", default=["cnn-tiny", "cnn-small", "resnet-tiny",
                                                          "efficientnet-lite0@64"],
                        help="NAME or NAME@SIZE (input side in pixels; default --size)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from augtrain.pipelines.train.engine import resolve_precision

    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device}; precision auto resolves to {resolve_precision('auto', device)}; "
          f"batch {args.batch}, {args.rounds} rounds of {args.steps} steps, one thread")
    print("| encoder | input | " + " | ".join(f"{v} (img/s)" for v in VARIANTS)
          + " | fp32 channels-last / fp32 | bf16 / fp32 |")
    print("|---|---|" + "---|" * (len(VARIANTS) + 2))
    for spec in args.encoders:
        encoder, _, size = spec.partition("@")
        size = int(size) if size else args.size
        steps = {v: _step_fn(encoder, *flags, args.batch, size, device) for v, flags in VARIANTS.items()}
        for step in steps.values():  # warm-up: oneDNN picks and caches its kernels
            step(), step()
        rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant, step in steps.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    step()
                rates[variant].append(args.batch * args.steps / (time.perf_counter() - start))
        med = {v: statistics.median(r) for v, r in rates.items()}
        base = med["fp32"]
        print(f"| {encoder} | {size} px | " + " | ".join(f"{r:.0f}" for r in med.values())
              + f" | {med['fp32 channels-last'] / base:.2f} | {med['bf16 channels-last'] / base:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
