"""A checkpoint saved by 2 DeepSpeed ranks resumed by 1 (and, slow-marked, by 3), for ZeRO 0-3,
real engines on gloo, one process per rank: what an elastic run does when Ray Train resizes its
worker group.

The global batch is kept (``engine.global_batch_size``: 6 micro-batches of 2, accumulated 3
times on 2 ranks, 6 times on 1, twice on 3), so an optimizer step sees the same samples at any
world size. Checked: the full optimizer state of every parameter (fp32 master weights, AdamW's
two moments, the step) after the re-partition equals the state consolidated before it, exactly;
the BatchNorm buffers equal the checkpoint's; the weight decay of each group is its own; and the
next optimizer steps' losses equal those of the run that went on at 2 ranks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from _ranks import run_ranks

STAGES = (0, 1, 2, 3)
MICRO, GLOBAL = 2, 12  # 6 micro-batches per optimizer step
BEFORE, AFTER = 2, 2  # optimizer steps before the checkpoint, and after it
LOSS_RTOL = 1e-5  # fp32; only the order of the gradient sums differs between world sizes


# ---------------------------------------------------------------- what each rank runs


def _cfg(stage: int, precision: str):
    from augtrain.pipelines.train.engine import EngineConfig

    return EngineConfig(precision=precision, zero_stage=stage, micro_batch_size=MICRO, global_batch_size=GLOBAL,
                        grad_clip=1.0, base_lr=0.05, lr_base_batch_size=256, warmup_steps=1, total_steps=8,
                        weight_decay=0.05)


class _PerSampleObjective(torch.nn.Module):
    """``cnn-tiny`` (BatchNorm inside) and a linear head regressing each image's channel means:
    a loss that is a mean over samples, so a global batch gives the same gradient however it is
    dealt over ranks. (SimCLR's is not: it draws its negatives from the ranks' micro-batches of
    one forward, so its loss depends on the world size as well as on the global batch.)"""

    def __init__(self) -> None:
        super().__init__()
        from augtrain.models import create_model

        self.encoder = create_model("cnn-tiny")
        self.head = torch.nn.Linear(self.encoder.num_features, 3)

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        x = views[0]
        return (self.head(self.encoder(x)) - x.mean(dim=(2, 3))).pow(2).mean()


def _objective() -> torch.nn.Module:
    torch.manual_seed(0)
    return _PerSampleObjective()


def _views(index: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(index)
    return [torch.rand(MICRO, 3, 32, 32, generator=g)]


def _train(engine, steps: range, rank: int, world: int) -> dict[int, float]:
    """Optimizer steps ``steps``: step k holds the global micro-batches 6k .. 6k + 5, dealt
    round-robin over the ranks; returns this rank's loss per global micro-batch."""
    from augtrain.pipelines.train.engine import train_step

    per_step = GLOBAL // MICRO
    assert engine.config.grad_accum_steps == per_step // world
    losses = {}
    for k in steps:
        for j in range(per_step // world):
            index = k * per_step + j * world + rank
            losses[index] = train_step(engine, _views(index)).loss
    return losses


def _full_state(engine) -> dict[str, dict[str, torch.Tensor]]:
    """Every parameter's whole optimizer state, gathered over the ranks (collective)."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    out = {}
    opt = engine.engine.optimizer
    if hasattr(opt, "_lazy_init_hp_params_optimizer_state"):  # ZeRO 1-2: link the params to today's moments
        opt._hp_optimizer_states_linked = False  # (a link made before the first step holds none)
        opt._lazy_init_hp_params_optimizer_state()
    for name, param in engine.module.named_parameters():
        if engine.config.zero_stage == 0:
            opt = engine.engine.optimizer
            state = getattr(opt, "optimizer", opt).state[param]
            entry = {"fp32": param.detach().float().clone(), "exp_avg": state["exp_avg"].clone(),
                     "exp_avg_sq": state["exp_avg_sq"].clone()}
        else:
            entry = {"fp32": safe_get_full_fp32_param(param).clone(),
                     "exp_avg": safe_get_full_optimizer_state(param, "exp_avg").clone(),
                     "exp_avg_sq": safe_get_full_optimizer_state(param, "exp_avg_sq").clone()}
        out[name] = {k: v.reshape(param.ds_shape if hasattr(param, "ds_shape") else param.shape)
                     for k, v in entry.items()}
    return out


def _steps_per_group(engine) -> list[float]:
    opt = engine.engine.optimizer
    base = getattr(opt, "optimizer", opt)
    return [float(s["step"]) for s in base.state.values() if "step" in s]


def _weight_decays(engine) -> list[float]:
    opt = engine.engine.optimizer
    return [g["weight_decay"] for g in getattr(opt, "optimizer", opt).param_groups]


def _save_and_go_on(rank: int, out: Path, stages: tuple[int, ...], precision: str = "fp32") -> None:
    """The run before the resize: BEFORE steps, a checkpoint, then AFTER more steps."""
    world = int(os.environ["WORLD_SIZE"])
    from augtrain.pipelines.train.checkpoint import save_checkpoint
    from augtrain.pipelines.train.engine import build_engine

    results = {}
    for stage in stages:
        engine = build_engine(_objective(), _cfg(stage, precision))
        _train(engine, range(BEFORE), rank, world)
        state = _full_state(engine)
        ckpt = save_checkpoint(engine, out / f"ckpt-{stage}", BEFORE, data_position={"epoch": 0})
        after = _train(engine, range(BEFORE, BEFORE + AFTER), rank, world)
        results[stage] = {"after": after, "ckpt": str(ckpt), "decays": _weight_decays(engine)}
        if rank == 0:
            torch.save(state, out / f"state-{stage}.pt")
    (out / f"w{world}-rank{rank}.json").write_text(json.dumps(results))


def _resume_and_go_on(rank: int, out: Path, stages: tuple[int, ...], precision: str = "fp32") -> None:
    """The run after the resize, as the training loop resumes: universal when the shards need it."""
    world = int(os.environ["WORLD_SIZE"])
    import torch.distributed as dist

    from augtrain.pipelines.train.checkpoint import ensure_universal, load_state_dict, needs_universal, resume
    from augtrain.pipelines.train.engine import build_engine

    results = {}
    saved_runs = json.loads((out / "w2-rank0.json").read_text())
    for stage in stages:
        ckpt = Path(saved_runs[str(stage)]["ckpt"])
        universal = needs_universal(ckpt, stage, world)
        assert universal == (stage > 0)
        torch.manual_seed(12345)  # another init: everything is overwritten by the resume
        engine = build_engine(_objective(), _cfg(stage, precision), load_universal=universal)
        if universal:
            ensure_universal(ckpt, engine.rank)
        meta = resume(engine, ckpt, universal=universal)
        state = _full_state(engine)
        saved = torch.load(out / f"state-{stage}.pt", weights_only=True)
        for name, entry in saved.items():
            for key, value in entry.items():
                assert torch.equal(state[name][key], value), f"ZeRO-{stage} {name} {key}"
        stored = load_state_dict(ckpt)
        for name, buffer in engine.module.named_buffers():
            assert torch.equal(buffer, stored[name].to(buffer.dtype)), f"ZeRO-{stage} buffer {name}"
        steps = _steps_per_group(engine)
        assert steps and all(s == BEFORE for s in steps), f"ZeRO-{stage} AdamW steps {steps}"
        assert engine.optimizer_steps == BEFORE and meta["step"] == BEFORE
        decays = _weight_decays(engine)
        after = _train(engine, range(BEFORE, BEFORE + AFTER), rank, world)
        assert _steps_per_group(engine) == [BEFORE + AFTER] * len(steps)  # one count per group, each advanced once a step
        results[stage] = {"after": after, "decays": decays}
        dist.barrier()
    (out / f"w{world}-rank{rank}.json").write_text(json.dumps(results))


# ---------------------------------------------------------------- the tests


def _losses(out: Path, world: int) -> dict[str, dict[int, float]]:
    merged: dict[str, dict[int, float]] = {}
    for rank in range(world):
        for stage, r in json.loads((out / f"w{world}-rank{rank}.json").read_text()).items():
            merged.setdefault(stage, {}).update({int(k): v for k, v in r["after"].items()})
    return merged


def _check_resized(out: Path, world: int, stages: tuple[int, ...], rtol: float = LOSS_RTOL) -> None:
    before, after = _losses(out, 2), _losses(out, world)
    for stage in map(str, stages):
        assert sorted(after[stage]) == sorted(before[stage]) == list(range(BEFORE * 6, (BEFORE + AFTER) * 6))
        for index, loss in before[stage].items():
            assert after[stage][index] == pytest.approx(loss, rel=rtol), f"ZeRO-{stage} micro-batch {index}"
    decays = json.loads((out / f"w{world}-rank0.json").read_text())
    for stage in map(str, stages):  # the no-decay group (biases, norms) keeps weight decay 0
        assert sorted(set(decays[stage]["decays"])) == [0.0, 0.05], f"ZeRO-{stage}: {decays[stage]['decays']}"


@pytest.fixture(scope="module")
def saved_at_two(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("elastic")
    run_ranks(_save_and_go_on, out, STAGES, world=2, timeout=400)
    return out


@pytest.mark.timeout(600)
def test_a_two_rank_checkpoint_resumes_on_one_rank_exactly(saved_at_two: Path):
    run_ranks(_resume_and_go_on, saved_at_two, STAGES, world=1, timeout=400)
    _check_resized(saved_at_two, 1, STAGES)
    for stage in STAGES[1:]:  # converted once, beside the shards
        ds_dir = saved_at_two / f"ckpt-{stage}" / f"step-{BEFORE:08d}" / "deepspeed"
        assert (ds_dir / "universal" / "zero").is_dir() and not (ds_dir / "latest_universal").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_two_rank_checkpoint_resumes_on_three_ranks_exactly(saved_at_two: Path):
    run_ranks(_resume_and_go_on, saved_at_two, STAGES, world=3, timeout=400)
    _check_resized(saved_at_two, 3, STAGES)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bf16_zero_1_3_state_resumes_on_one_rank_exactly(tmp_path: Path):
    """bf16 weights (fp32 master weights and moments, re-partitioned exactly); the losses agree to
    bf16's precision. (ZeRO-0 in bf16 keeps its state whole and loads as it is.)"""
    stages = (1, 2, 3)
    run_ranks(_save_and_go_on, tmp_path, stages, "bf16", world=2, timeout=400)
    run_ranks(_resume_and_go_on, tmp_path, stages, "bf16", world=1, timeout=400)
    _check_resized(tmp_path, 1, stages, rtol=1e-2)


def test_a_world_size_that_does_not_divide_the_global_batch_is_refused():
    from augtrain.pipelines.train.engine import EngineConfig, effective_batch_size, for_world

    cfg = EngineConfig(micro_batch_size=4, global_batch_size=24)
    assert [for_world(cfg, w).grad_accum_steps for w in (1, 2, 3, 6)] == [6, 3, 2, 1]
    assert {effective_batch_size(cfg, w) for w in (1, 2, 3, 6)} == {24}
    with pytest.raises(ValueError, match="global_batch_size 24 is not a whole number of micro-batches of 4 on 4"):
        for_world(cfg, 4)
    assert for_world(EngineConfig(grad_accum_steps=3), 5).grad_accum_steps == 3  # no global batch: fixed


def test_only_zero_1_3_at_another_world_size_go_through_a_universal_checkpoint(tmp_path: Path):
    from augtrain.pipelines.train.checkpoint import needs_universal

    (tmp_path / "augtrain.json").write_text(json.dumps({"engine": {"zero_stage": 0, "world_size": 2}}))
    assert not needs_universal(tmp_path, 0, 3)  # ZeRO 0 state is whole on every rank
    with pytest.raises(ValueError, match="saved with ZeRO stage 0, resumed with 2; set engine.zero_stage back to 0"):
        needs_universal(tmp_path, 2, 2)
    (tmp_path / "augtrain.json").write_text(json.dumps({"engine": {"zero_stage": 2, "world_size": 2}}))
    assert not needs_universal(tmp_path, 2, 2) and needs_universal(tmp_path, 2, 1) and needs_universal(tmp_path, 2, 3)
    with pytest.raises(ValueError, match="saved with ZeRO stage 2, resumed with 3"):
        needs_universal(tmp_path, 3, 2)
