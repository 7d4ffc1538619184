"""The DeepSpeed engine of one training worker, built from a small typed config.

    engine = build_engine(objective, EngineConfig(zero_stage=2, micro_batch_size=64))
    for views in batches:                  # views: list of [B, C, H, W] float tensors
        out = train_step(engine, views)    # one micro-batch; the optimizer steps every
                                           # `grad_accum_steps` micro-batches
The optimizer is a torch one passed to DeepSpeed (a DeepSpeed-named optimizer JIT-compiles ops
for minutes); the schedule is linear warmup then cosine decay, as a torch `LambdaLR` that
DeepSpeed steps once per optimizer step; the peak LR scales linearly with the effective batch.
Devices: `auto` is CUDA (NCCL) when present, else CPU (gloo); precision `auto` is bf16 on a CUDA
device that supports it and on a CPU with AMX tiles (oneDNN runs bf16 convolutions and matmuls on
them: `benchmarks/precision.py`), fp32 otherwise. DeepSpeed is imported
inside the functions that run it. World size 1 works without any launcher.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[list[dict[str, Any]], float], torch.optim.Optimizer]


@dataclass(frozen=True)
class EngineConfig:
    """What the engine needs; `validate()` says how to fix a bad value."""

    zero_stage: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on CUDA or an AMX CPU, else fp32
    micro_batch_size: int = 32  # samples per worker per forward
    grad_accum_steps: int = 1
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    base_lr: float = 1.5e-4  # LR for an effective batch of `lr_base_batch_size`
    lr_base_batch_size: int = 256
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of the peak LR
    warmup_steps: int = 0  # optimizer steps
    # warmup as a fraction of the run's optimizer steps (one config fits a corpus of any size);
    # when set it decides the warmup and warmup_steps is left at 0
    warmup_fraction: float | None = None
    total_steps: int = 1000  # optimizer steps of the whole run
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    # samples per optimizer step across all workers, kept whatever the worker count (an elastic
    # run): each world size W then accumulates global_batch_size / (micro_batch_size x W)
    # micro-batches, so the schedule, the peak LR and the optimizer's trajectory do not depend on
    # how many workers there are. None: micro_batch_size x grad_accum_steps x W (fixed W)
    global_batch_size: int | None = None

    def validate(self) -> EngineConfig:
        checks = [
            (self.zero_stage in (0, 1, 2, 3), f"engine.zero_stage must be 0-3, got {self.zero_stage}"),
            (self.device in ("auto", "cpu", "cuda"), f"engine.device must be auto|cpu|cuda, got {self.device!r}"),
            (self.precision in ("auto", "fp32", "bf16"),
             f"engine.precision must be auto|fp32|bf16, got {self.precision!r} (fp16 is not offered)"),
            (self.micro_batch_size >= 1, "engine.micro_batch_size must be >= 1"),
            (self.grad_accum_steps >= 1, "engine.grad_accum_steps must be >= 1"),
            (self.grad_clip >= 0, "engine.grad_clip must be >= 0 (0 disables clipping)"),
            (self.base_lr > 0 and self.lr_base_batch_size >= 1, "engine.base_lr and lr_base_batch_size must be > 0"),
            (0 <= self.min_lr_ratio <= 1, "engine.min_lr_ratio must be in [0, 1]"),
            (self.total_steps >= 1, "engine.total_steps must be >= 1"),
            (0 <= self.warmup_steps <= self.total_steps,
             f"engine.warmup_steps ({self.warmup_steps}) must be in [0, total_steps={self.total_steps}]; "
             "engine.warmup_fraction sets it as a fraction of the run instead"),
            (self.warmup_fraction is None or 0 <= self.warmup_fraction < 1,
             f"engine.warmup_fraction must be in [0, 1), got {self.warmup_fraction}"),
            (self.warmup_fraction is None or self.warmup_steps == 0,
             "engine.warmup_steps and engine.warmup_fraction both set: keep one"),
            (self.global_batch_size is None or self.global_batch_size >= self.micro_batch_size,
             f"engine.global_batch_size ({self.global_batch_size}) must be at least micro_batch_size "
             f"({self.micro_batch_size})"),
        ]
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise ValueError("; ".join(errors))
        return self


# ---------------------------------------------------------------- pure arithmetic


def resolve_schedule(cfg: EngineConfig, total_steps: int) -> EngineConfig:
    """``cfg`` with ``total_steps`` and, when ``warmup_fraction`` is set, ``warmup_steps`` filled
    in (and the fraction cleared) for a run of ``total_steps`` optimizer steps."""
    if cfg.warmup_fraction is None:
        return replace(cfg, total_steps=total_steps).validate()
    warmup = round(cfg.warmup_fraction * total_steps)
    return replace(cfg, total_steps=total_steps, warmup_steps=warmup, warmup_fraction=None).validate()


def for_world(cfg: EngineConfig, world_size: int) -> EngineConfig:
    """``cfg`` for ``world_size`` workers: with ``global_batch_size`` set, the accumulation that
    keeps it (ValueError when the world size does not divide it in whole micro-batches)."""
    if cfg.global_batch_size is None:
        return cfg
    per_step = cfg.micro_batch_size * world_size
    if cfg.global_batch_size % per_step:
        raise ValueError(f"engine.global_batch_size {cfg.global_batch_size} is not a whole number of micro-batches "
                         f"of {cfg.micro_batch_size} on {world_size} workers; choose a multiple of "
                         f"{cfg.micro_batch_size} x every worker count the run may have")
    return replace(cfg, grad_accum_steps=cfg.global_batch_size // per_step)


def effective_batch_size(cfg: EngineConfig, world_size: int) -> int:
    """Samples per optimizer step across all workers."""
    cfg = for_world(cfg, world_size)
    return cfg.micro_batch_size * cfg.grad_accum_steps * world_size


def scaled_lr(cfg: EngineConfig, world_size: int) -> float:
    """Peak LR by the linear scaling rule: base_lr * effective batch / lr_base_batch_size."""
    return cfg.base_lr * effective_batch_size(cfg, world_size) / cfg.lr_base_batch_size


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak LR for optimizer step `step` (0-based).

    Linear warmup over `warmup_steps` (the first step already moves), then half a cosine from
    1 down to `min_ratio` at `total_steps`; flat at `min_ratio` after.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and convolutions; never biases, norms or embeddings' 1-d vectors."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def resolve_device(device: str) -> torch.device:
    """`auto` -> this worker's CUDA device when present, else CPU; `cuda` without one fails."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("engine.device is 'cuda' but no CUDA device is visible; set engine.device: auto or cpu")
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    if device == "auto":
        log.warning("no CUDA device: training on CPU (gloo)")
    return torch.device("cpu")


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (``/proc/cpuinfo``); empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.partition(":")[2].split())


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 arithmetic and oneDNN's bf16 kernels: AMX tiles (Sapphire
    Rapids and later) or AVX512-BF16 (Cooper Lake, AMD Zen 4 and later). There bf16 training runs
    markedly faster than fp32 (``benchmarks/precision.py``: 2.8-4.7x for ``cnn-small`` with AMX,
    2.6x on a Zen 4 EPYC); without them bf16 on a CPU is emulated or slower."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        native = bool(amx and amx()) or "avx512_bf16" in cpu_flags()
        return native and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> Literal["fp32", "bf16"]:
    """`auto` -> bf16 on a CUDA device that supports it or on a CPU with AMX, fp32 otherwise."""
    if precision != "auto":
        return precision  # type: ignore[return-value]
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


def deepspeed_config(cfg: EngineConfig, world_size: int, precision: str,
                     bf16_buffers: bool = False) -> dict[str, Any]:
    """The DeepSpeed JSON config for `cfg` (optimizer and scheduler are passed as objects)."""
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "train_batch_size": effective_batch_size(cfg, world_size),
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": precision == "bf16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if precision == "bf16" and bf16_buffers:
        # DeepSpeed casts parameters only; BatchNorm's running stats must follow on CPU
        config["data_types"] = {"buffer_dtype": "bf16"}
    return config


# ---------------------------------------------------------------- process group


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(device: torch.device) -> None:
    """Join (or create) the default process group: NCCL on CUDA, gloo on CPU.

    Under Ray Train or torchrun the group exists or the env (`MASTER_ADDR`, `RANK`,
    `WORLD_SIZE`) describes it; otherwise a one-process group on a free local port.
    """
    os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed insists on it
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
        dist.init_process_group(backend)
    else:
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}",
                                rank=0, world_size=1)


# ---------------------------------------------------------------- engine


@dataclass
class TrainEngine:
    """A DeepSpeed engine with what the loop needs to feed it."""

    engine: Any  # deepspeed.DeepSpeedEngine; engine.module is the model
    config: EngineConfig
    device: torch.device
    precision: Literal["fp32", "bf16"]
    world_size: int
    rank: int
    peak_lr: float

    @property
    def module(self) -> nn.Module:
        return self.engine.module

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    @property
    def optimizer_steps(self) -> int:
        return self.engine.global_steps

    def lr(self) -> float:
        return self.engine.get_lr()[0]

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for logs and checkpoints."""
        return {**asdict(self.config), "device": str(self.device), "precision": self.precision,
                "world_size": self.world_size, "peak_lr": self.peak_lr,
                "effective_batch_size": effective_batch_size(self.config, self.world_size)}


def adamw(groups: list[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def build_engine(model: nn.Module, cfg: EngineConfig,
                 optimizer: OptimizerFactory | None = None, load_universal: bool = False) -> TrainEngine:
    """Wrap `model` (whose forward returns the loss) in a DeepSpeed engine.

    `optimizer(param_groups, lr)` builds a torch optimizer; default AdamW with `cfg.betas`.
    With `global_batch_size` the accumulation follows the world size (`for_world`).
    `load_universal`: the engine will load a universal checkpoint (one saved at another world
    size, `checkpoint.resume`); DeepSpeed must know when it is built.
    """
    import deepspeed

    cfg.validate()
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    init_distributed(device)
    world_size = dist.get_world_size()
    cfg = for_world(cfg, world_size)
    peak_lr = scaled_lr(cfg, world_size)
    model.to(device)
    _broadcast_from_rank0(model)

    make_optimizer = optimizer or (lambda groups, lr: adamw(groups, lr, cfg.betas))
    torch_optimizer = make_optimizer(param_groups(model, cfg.weight_decay), peak_lr)

    def schedule(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_factor(step, cfg.warmup_steps, cfg.total_steps, cfg.min_lr_ratio))

    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    ds_config = deepspeed_config(cfg, world_size, precision, bf16_buffers=has_bn)
    if load_universal:
        ds_config["checkpoint"] = {"load_universal": True}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=torch_optimizer, lr_scheduler=schedule,
                                           config=ds_config)
    return TrainEngine(engine, cfg, device, precision, world_size, dist.get_rank(), peak_lr)


def _broadcast_from_rank0(model: nn.Module) -> None:
    """Every rank starts from rank 0's weights and buffers, whatever its own init drew."""
    if dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)


@dataclass(frozen=True)
class StepOutput:
    loss: float  # this rank's loss on its micro-batch
    lr: float  # LR the update of this step used (or will use, mid-accumulation)
    stepped: bool  # True when this micro-batch completed an optimizer step
    # the loss's parts, for objectives that expose them (``loss_terms``: a VAE's recon and kl)
    terms: dict[str, float] = field(default_factory=dict)


def to_device(views: Sequence[torch.Tensor], engine: TrainEngine) -> list[torch.Tensor]:
    """views: V x [B, C, H, W] -> on the engine's device and input dtype."""
    return [v.to(engine.device, dtype=engine.input_dtype, non_blocking=True) for v in views]


def train_step(engine: TrainEngine, views: Sequence[torch.Tensor], labels: torch.Tensor | None = None) -> StepOutput:
    """Forward, backward and (at the accumulation boundary) optimizer + LR step of one micro-batch.
    ``labels`` [B] go to objectives trained on labelled samples (``uses_labels``: a conditional VAE)."""
    ds = engine.engine
    lr = engine.lr()
    stepped = ds.is_gradient_accumulation_boundary()
    if labels is None:
        loss = ds(to_device(views, engine))
    else:
        loss = ds(to_device(views, engine), labels=labels.to(engine.device, non_blocking=True))
    terms = {k: float(v) for k, v in getattr(ds.module, "loss_terms", {}).items()}
    ds.backward(loss)
    ds.step()
    return StepOutput(loss=loss.item(), lr=lr, stepped=stepped, terms=terms)
