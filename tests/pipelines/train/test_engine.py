"""The DeepSpeed engine in one process: config checks, LR arithmetic, and a real engine that
trains exactly like the equivalent plain torch loop."""

from __future__ import annotations

import math

import pytest
import torch

from augtrain.models import create_objective
from augtrain.pipelines.train.engine import (
    EngineConfig,
    build_engine,
    cpu_has_fast_bf16,
    deepspeed_config,
    effective_batch_size,
    lr_factor,
    param_groups,
    resolve_device,
    resolve_precision,
    scaled_lr,
    train_step,
)


def test_lr_factor_warms_up_then_follows_half_a_cosine():
    warmup, total = 4, 14
    assert [lr_factor(s, warmup, total) for s in range(warmup)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(warmup, warmup, total) == 1.0
    assert lr_factor(warmup + 5, warmup, total) == pytest.approx(0.5)  # halfway down
    assert lr_factor(total, warmup, total, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(total + 50, warmup, total, min_ratio=0.1) == pytest.approx(0.1)
    decay = [lr_factor(s, warmup, total) for s in range(warmup, total + 1)]
    assert all(a > b for a, b in zip(decay, decay[1:]))


def test_lr_scales_with_the_effective_batch():
    cfg = EngineConfig(micro_batch_size=32, grad_accum_steps=4, base_lr=1e-3, lr_base_batch_size=256)
    assert effective_batch_size(cfg, world_size=8) == 1024
    assert scaled_lr(cfg, world_size=8) == pytest.approx(4e-3)
    assert scaled_lr(cfg, world_size=2) == pytest.approx(1e-3)


@pytest.mark.parametrize("field, value, words", [
    ("zero_stage", 4, "zero_stage"),
    ("precision", "fp16", "fp16 is not offered"),
    ("warmup_steps", 20, "warmup_steps"),
    ("grad_accum_steps", 0, "grad_accum_steps"),
])
def test_config_errors_name_the_key(field, value, words):
    with pytest.raises(ValueError, match=words):
        EngineConfig(total_steps=10, **{field: value}).validate()


def test_deepspeed_config_is_consistent():
    cfg = EngineConfig(zero_stage=3, micro_batch_size=8, grad_accum_steps=2, grad_clip=0.5)
    ds = deepspeed_config(cfg, world_size=4, precision="bf16", bf16_buffers=True)
    assert ds["train_batch_size"] == 8 * 2 * 4
    assert ds["zero_optimization"] == {"stage": 3}
    assert ds["bf16"] == {"enabled": True} and ds["data_types"] == {"buffer_dtype": "bf16"}
    assert ds["gradient_clipping"] == 0.5
    assert "optimizer" not in ds and "scheduler" not in ds  # torch objects are passed instead


def test_param_groups_do_not_decay_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_auto_falls_back_to_cpu_and_explicit_cuda_fails():
    assert resolve_device("auto") == torch.device("cpu")
    # bf16 where the CPU has AMX tiles (oneDNN's fast bf16 kernels), fp32 elsewhere
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if cpu_has_fast_bf16() else "fp32")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")


def _simclr():
    torch.manual_seed(0)
    return create_objective("simclr", encoder="cnn-tiny", encoder_kwargs={"in_chans": 1},
                            proj_hidden_dim=32, proj_dim=16)


def _batches(n: int, batch: int = 8) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.rand(batch, 1, 28, 28, generator=g)
        out.append([x, (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)])
    return out


def _plain_torch_losses(cfg: EngineConfig, batches) -> tuple[list[float], list[float]]:
    """The same training written by hand: AdamW, warmup+cosine, accumulation, clipping."""
    model = _simclr()
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=scaled_lr(cfg, 1),
                                  betas=cfg.betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.total_steps, cfg.min_lr_ratio))
    losses, lrs = [], []
    for i, views in enumerate(batches):
        lrs.append(optimizer.param_groups[0]["lr"])
        loss = model(views)
        (loss / cfg.grad_accum_steps).backward()
        losses.append(loss.item())
        if (i + 1) % cfg.grad_accum_steps == 0:
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad()
            schedule.step()
    return losses, lrs


@pytest.mark.timeout(180)
@pytest.mark.parametrize("stage, clip", [(0, 0.0), (2, 0.0), (2, 0.05)])
def test_one_process_engine_trains_like_plain_torch(stage: int, clip: float):
    cfg = EngineConfig(zero_stage=stage, precision="fp32", micro_batch_size=8, grad_accum_steps=2,
                       grad_clip=clip, base_lr=0.05, lr_base_batch_size=256, warmup_steps=2, total_steps=5)
    batches = _batches(10)
    engine = build_engine(_simclr(), cfg)
    assert engine.world_size == 1 and engine.precision == "fp32"
    assert engine.peak_lr == pytest.approx(0.05 * 16 / 256)

    outs = [train_step(engine, views) for views in batches]
    assert [o.stepped for o in outs] == [False, True] * 5
    assert engine.optimizer_steps == 5

    expected_losses, expected_lrs = _plain_torch_losses(cfg, batches)
    assert [o.lr for o in outs] == pytest.approx(expected_lrs, rel=1e-6)
    assert [o.loss for o in outs] == pytest.approx(expected_losses, rel=1e-5, abs=1e-6)
    assert not math.isclose(outs[-1].loss, outs[0].loss)  # the weights did move


@pytest.mark.timeout(120)
def test_bf16_on_cpu_trains_a_batchnorm_model():
    cfg = EngineConfig(zero_stage=2, precision="bf16", micro_batch_size=8, base_lr=0.05,
                       lr_base_batch_size=8, total_steps=20)
    engine = build_engine(_simclr(), cfg)
    assert engine.input_dtype == torch.bfloat16
    views = _batches(1)[0]
    losses = [train_step(engine, views).loss for _ in range(15)]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
