"""fp32 against bf16 training steps of the shipped image encoders, side by side in one run.

The same model, batch and AdamW step on one CPU thread (or the GPU when there is one), in
alternating rounds (the machine is noisy): fp32 in the default memory layout, and bf16 the way
augtrain runs it where ``precision: auto`` picks bf16 (autocast of the forward pass, channels-last
tensors; weights, optimizer and loss in fp32). Prints images/s of each and the ratio, and
whether this machine's ``auto`` resolves to bf16 (a CPU with AMX tiles, a CUDA device with bf16).

    .venv/bin/python benchmarks/precision.py [--encoders cnn-tiny cnn-small] [--batch 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def _step_fn(encoder: str, bf16: bool, batch: int, size: int, device: torch.device):
    from augtrain.models import create_model

    torch.manual_seed(0)
    model = create_model(encoder, in_chans=1).to(device)
    head = torch.nn.Linear(model.num_features, 10).to(device)
    params = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    x = torch.rand(batch, 1, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    if bf16:
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
    parser.add_argument("--encoders", nargs="+", default=["cnn-tiny", "cnn-small", "resnet-tiny"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from augtrain.pipelines.train.engine import resolve_precision

    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device}; precision auto resolves to {resolve_precision('auto', device)}; "
          f"batch {args.batch} of 1x{args.size}x{args.size}, {args.rounds} rounds of {args.steps} steps")
    print("| encoder | fp32 (img/s) | bf16 autocast, channels-last (img/s) | bf16 / fp32 |")
    print("|---|---|---|---|")
    for encoder in args.encoders:
        steps = {bf16: _step_fn(encoder, bf16, args.batch, args.size, device) for bf16 in (False, True)}
        for step in steps.values():  # warm-up: oneDNN picks and caches its kernels
            step(), step()
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for bf16, step in steps.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    step()
                rates[bf16].append(args.batch * args.steps / (time.perf_counter() - start))
        fp32, bf16 = statistics.median(rates[False]), statistics.median(rates[True])
        print(f"| {encoder} | {fp32:.0f} | {bf16:.0f} | {bf16 / fp32:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
