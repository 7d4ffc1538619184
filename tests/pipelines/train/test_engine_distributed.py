"""Two real DeepSpeed ranks on CPU (gloo), one process each.

For ZeRO stages 0, 2 and 3 with the same seed: the per-rank loss trajectories agree within
LOSS_RTOL, the consolidated checkpoint reproduces the live model's outputs (transformers
`from_pretrained` for MAE, `load_model` for SimCLR), and a fresh engine resumed from the
checkpoint continues the trajectory exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _ranks import run_ranks

# ZeRO and checkpoint mechanics, checked exactly in fp32 (`precision: auto` is bf16 on a CPU
# with AMX; tests/pipelines/train/test_engine.py trains in bf16)
PRECISION = "fp32"

WORLD = 2
STAGES = (0, 2, 3)
STEPS, MORE = 8, 3  # micro-batches before the checkpoint, and after it
# fp32 on CPU: the stages differ only in how gradients are summed (partitioned reduce-scatter
# vs all-reduce), which moves the last bits; measured differences are below 1e-6.
LOSS_RTOL = 1e-5


# ---------------------------------------------------------------- what each rank runs


def _objective(name: str):
    from augtrain.models import create_objective

    torch.manual_seed(0)
    if name == "mae":
        return create_objective("mae", encoder="vit-micro")
    return create_objective("simclr", encoder="cnn-tiny", proj_hidden_dim=32, proj_dim=16)


def _views(name: str, step: int, rank: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.rand(4, 3, 32, 32, generator=g)
    if name == "mae":
        return [x]
    return [x, (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)]


def _probe(name: str, module) -> torch.Tensor:
    """Deterministic outputs of the trained weights on a fixed input (same on every rank)."""
    g = torch.Generator().manual_seed(7)
    x = torch.rand(3, 3, 32, 32, generator=g)
    with torch.no_grad():
        if name == "mae":
            noise = torch.rand(3, 16, generator=g)
            return module.mae(pixel_values=x, noise=noise).logits
        return module.encoder.forward_features(x)


def _train_save_resume(rank: int, out: Path, name: str, stages: tuple[int, ...]) -> None:
    from augtrain.pipelines.train.checkpoint import resume, save_checkpoint
    from augtrain.pipelines.train.engine import EngineConfig, build_engine, train_step

    results = {}
    for stage in stages:
        cfg = EngineConfig(precision=PRECISION, zero_stage=stage, micro_batch_size=4, grad_accum_steps=2, grad_clip=1.0,
                           base_lr=0.05, lr_base_batch_size=256, warmup_steps=1, total_steps=6)
        engine = build_engine(_objective(name), cfg)
        torch.manual_seed(100 + rank)  # MAE's masks come from the global generator
        losses = [train_step(engine, _views(name, s, rank)).loss for s in range(STEPS)]

        engine.module.eval()
        probe = _probe(name, engine.module)
        engine.module.train()
        ckpt = save_checkpoint(engine, out / f"ckpt-{stage}", STEPS, config={"stage": stage},
                               policy={"ops": []}, data_position={"consumed": STEPS * 4 * WORLD},
                               metrics={"loss": losses[-1]})
        more = [train_step(engine, _views(name, s, rank)).loss for s in range(STEPS, STEPS + MORE)]

        torch.manual_seed(12345)  # a different init and RNG, all overwritten by resume
        resumed = build_engine(_objective(name), cfg)
        meta = resume(resumed, ckpt)
        again = [train_step(resumed, _views(name, s, rank)).loss for s in range(STEPS, STEPS + MORE)]
        results[stage] = {"losses": losses, "more": more, "again": again, "ckpt": str(ckpt),
                          "meta_step": meta["step"], "data_position": meta["data_position"]}
        if rank == 0:
            torch.save(probe, out / f"probe-{stage}.pt")
    (out / f"rank{rank}.json").write_text(json.dumps(results))


# ---------------------------------------------------------------- the tests


def _check(out: Path, stages: tuple[int, ...]) -> dict:
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for rank in ranks:
        reference = rank[str(stages[0])]["losses"]
        for stage in stages:
            r = rank[str(stage)]
            assert r["losses"] == pytest.approx(reference, rel=LOSS_RTOL), f"ZeRO-{stage}"
            assert r["again"] == pytest.approx(r["more"], rel=1e-6, abs=1e-7), f"resume, ZeRO-{stage}"
            assert r["meta_step"] == STEPS and r["data_position"] == {"consumed": STEPS * 4 * WORLD}
        assert reference[-1] != reference[0]
    return ranks[0]


def _max_loss_gap(rank0: dict, stages: tuple[int, ...]) -> float:
    ref = rank0[str(stages[0])]["losses"]
    return max(abs(a - b) / abs(b) for s in stages for a, b in zip(rank0[str(s)]["losses"], ref))


@pytest.mark.timeout(300)
def test_simclr_zero_stages_agree_and_checkpoints_reproduce(tmp_path: Path):
    from augtrain.pipelines.train.checkpoint import load_model

    run_ranks(_train_save_resume, tmp_path, "simclr", STAGES)
    rank0 = _check(tmp_path, STAGES)
    print(f"simclr: max relative loss gap across ZeRO {STAGES}: {_max_loss_gap(rank0, STAGES):.2e}")
    for stage in STAGES:
        model = load_model(rank0[str(stage)]["ckpt"]).eval()
        expected = torch.load(tmp_path / f"probe-{stage}.pt", weights_only=True)
        torch.testing.assert_close(_probe("simclr", model), expected, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_mae_zero_stages_agree_and_from_pretrained_reproduces(tmp_path: Path):
    from transformers import ViTMAEForPreTraining

    run_ranks(_train_save_resume, tmp_path, "mae", STAGES, timeout=400)
    rank0 = _check(tmp_path, STAGES)
    print(f"mae: max relative loss gap across ZeRO {STAGES}: {_max_loss_gap(rank0, STAGES):.2e}")
    for stage in STAGES:
        model = ViTMAEForPreTraining.from_pretrained(rank0[str(stage)]["ckpt"]).eval()
        wrapped = torch.nn.Module()
        wrapped.mae = model
        expected = torch.load(tmp_path / f"probe-{stage}.pt", weights_only=True)
        torch.testing.assert_close(_probe("mae", wrapped), expected, rtol=0, atol=1e-6)


def _different_inits(rank: int, out: Path) -> None:
    from augtrain.models import create_objective
    from augtrain.pipelines.train.engine import EngineConfig, build_engine

    torch.manual_seed(rank)  # each rank draws its own initial weights
    objective = create_objective("simclr", encoder="cnn-tiny", proj_hidden_dim=32, proj_dim=16)
    engine = build_engine(objective, EngineConfig(precision=PRECISION, zero_stage=2, micro_batch_size=4, total_steps=2))
    state = {k: v.clone() for k, v in engine.module.state_dict().items()}
    torch.save(state, out / f"init-rank{rank}.pt")


@pytest.mark.timeout(180)
def test_every_rank_starts_from_rank_0_weights(tmp_path: Path):
    from augtrain.models import create_objective

    run_ranks(_different_inits, tmp_path)
    torch.manual_seed(0)
    expected = create_objective("simclr", encoder="cnn-tiny", proj_hidden_dim=32, proj_dim=16).state_dict()
    for rank in range(WORLD):
        state = torch.load(tmp_path / f"init-rank{rank}.pt", weights_only=True)
        for k, v in expected.items():
            torch.testing.assert_close(state[k], v, rtol=0, atol=0)
