"""Pretraining checkpoints: one directory per save, written under a temporary name and renamed.

    <root>/
      step-00000100/
        augtrain.json       resolved config, policy, data position, metrics, model spec, versions
        model.safetensors   consolidated fp32 weights (for a transformers model: its own keys,
        config.json         and its config, so `<Model>.from_pretrained(dir)` loads it)
        deepspeed/          ZeRO shards of every rank (`engine.save_checkpoint`), per-rank RNG
      latest                name of the newest complete checkpoint
      best                  name of the best one by the chosen metric (when one is chosen)
      .tmp-step-00000200/   a save in progress; never read, removed by the next save

A crash during a save leaves a `.tmp-*` folder and the previous checkpoint still `latest`.
Every rank must see `root` (a shared filesystem) because rank 0 consolidates all shards.
Loading never unpickles arbitrary objects: weights come from safetensors, and DeepSpeed's own
files are read with `torch.load(weights_only=True)` allowing only DeepSpeed's plain state classes.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import platform
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from augtrain.models import build_from_spec
from augtrain.models.registry import MODELS
from augtrain.pipelines.train.engine import TrainEngine
from augtrain.pipelines.data.storage import write_text_atomic

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DS_TAG = "state"
UNIVERSAL_TAG = "universal"  # the world-size-independent copy of DS_TAG (a resume at another world size)
UNIVERSAL_VERSION = 0.4  # deepspeed.checkpoint.constants: the universal format ds_to_universal writes
_NAME = re.compile(r"^step-(\d{8})$")


@dataclass(frozen=True)
class RetentionConfig:
    """Which checkpoints survive: the last `keep_last` and the best by `best_metric`."""

    keep_last: int = 3
    best_metric: str | None = None  # a key of the metrics passed to save_checkpoint
    best_mode: Literal["min", "max"] = "min"

    def __post_init__(self) -> None:
        if self.keep_last < 1:
            raise ValueError("checkpoint.keep_last must be >= 1")
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"checkpoint.best_mode must be min or max, got {self.best_mode!r}")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


# ---------------------------------------------------------------- saving


def save_checkpoint(engine: TrainEngine, root: str | Path, step: int, *,
                    config: dict[str, Any] | None = None, policy: Any = None,
                    data_position: Any = None, metrics: dict[str, float] | None = None,
                    retention: RetentionConfig = RetentionConfig()) -> Path:
    """Collective: every rank calls it; returns the complete checkpoint directory.

    `config`, `policy` and `data_position` are JSON-able values stored as given (the caller's
    resolved experiment config, augmentation policy and reader position).
    """
    root = Path(root)
    final, tmp = root / checkpoint_name(step), root / f".tmp-{checkpoint_name(step)}"
    if engine.rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(root)
        tmp.mkdir()
    _barrier()

    # universal_checkpoint_info: what ds_to_universal needs to convert ZeRO 1-2 shards (a resume
    # at another world size, ``resume``)
    engine.engine.save_checkpoint(str(tmp / "deepspeed"), tag=DS_TAG, client_state={
        "step": step, "universal_checkpoint_info": {"universal_checkpoint_version": UNIVERSAL_VERSION}})
    _save_rng(tmp / "deepspeed" / f"rng-rank{engine.rank:05d}.safetensors")
    _barrier()

    if engine.rank == 0:
        state = consolidated_state_dict(engine, tmp / "deepspeed")
        meta = _metadata(engine, step, config, policy, data_position, metrics or {})
        meta["transformers_prefix"] = _write_model(engine.module, state, tmp)
        _write_json(tmp / "augtrain.json", meta)
        _fsync_tree(tmp)
        _publish(tmp, final)
        _update_pointers(root, final.name, meta["metrics"], retention)
        _prune(root, retention)
    _barrier()
    return final


def save_packaged_checkpoint(name: str, root: str | Path, **kwargs: Any) -> Path:
    """A step-0 checkpoint of encoder ``name`` with the pretrained weights its package ships
    (``pretrained=True``; EfficientNet-Lite0's ImageNet weights), so that ``finetune`` and
    ``search`` take it as ``--checkpoint`` like a pretraining run's: ``mode: full`` and ``linear``
    start from those weights, ``mode: scratch`` rebuilds the architecture with fresh ones (the
    spec stored says ``pretrained: false``). ``kwargs`` go to the encoder (``in_chans=1``)."""
    from augtrain.models import create_model

    if name not in MODELS.names():
        raise ValueError(f"unknown encoder {name!r}; registered: {', '.join(MODELS.names())}")
    if "pretrained" not in inspect.signature(MODELS.get(name)).parameters:
        raise ValueError(f"encoder {name!r} ships no pretrained weights (it takes no `pretrained` argument)")
    if kwargs.pop("pretrained", True) is not True:
        raise ValueError("a packaged checkpoint holds the pretrained weights: leave `pretrained` out")
    module = create_model(name, pretrained=True, **kwargs)
    module.spec = {**module.spec, "pretrained": False}  # what `mode: scratch` rebuilds
    root = Path(root)
    final, tmp = root / checkpoint_name(0), root / f".tmp-{checkpoint_name(0)}"
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root)
    tmp.mkdir()
    state = {k: _as_fp32(v) for k, v in module.state_dict().items()}
    meta = {"format": FORMAT_VERSION, "step": 0, "optimizer_steps": 0,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "model": module.spec,
            "engine": None, "config": None, "policy": None, "data_position": None, "metrics": {},
            "versions": _versions(), "source": f"the pretrained weights packaged with {name}",
            "transformers_prefix": _write_model(module, state, tmp)}
    _write_json(tmp / "augtrain.json", meta)
    _fsync_tree(tmp)
    _publish(tmp, final)
    _write_pointer(root, "latest", final.name)
    return final


def consolidated_state_dict(engine: TrainEngine, ds_dir: Path) -> dict[str, torch.Tensor]:
    """Full fp32 weights: ZeRO 1-3 merged from the shards (fp32 master weights) by DeepSpeed's
    zero_to_fp32, ZeRO 0 from the module, which every rank holds whole (with bf16, those are
    the bf16 weights the model computes with, widened to fp32)."""
    if engine.config.zero_stage == 0:
        state = engine.module.state_dict()
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        # reads the files this job wrote a moment ago (DeepSpeed unpickles them itself)
        state = get_fp32_state_dict_from_zero_checkpoint(str(ds_dir), tag=DS_TAG)
    return {k: _as_fp32(v) for k, v in state.items()}


def _as_fp32(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().cpu()
    return (t.float() if t.is_floating_point() else t).contiguous().clone()


def _write_model(module: nn.Module, state: dict[str, torch.Tensor], out: Path) -> str | None:
    """model.safetensors + config.json; returns the key prefix stripped for transformers models."""
    hf = module.transformers_model() if hasattr(module, "transformers_model") else None
    if hf is None:
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        _write_json(out / "config.json", {"augtrain_model": getattr(module, "spec", None)})
        return None
    prefix, model = hf
    inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if len(inner) != len(state):
        outside = sorted(k for k in state if not k.startswith(prefix))
        raise ValueError(f"weights outside the transformers model would be lost: {outside[:5]}")
    save_file(inner, str(out / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(str(out))
    return prefix


def _metadata(engine: TrainEngine, step: int, config: Any, policy: Any, data_position: Any,
              metrics: dict[str, float]) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "step": step,
        "optimizer_steps": engine.optimizer_steps,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": getattr(engine.module, "spec", None),
        "engine": engine.describe(),
        "config": config,
        "policy": policy,
        "data_position": data_position,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("augtrain", "torch", "deepspeed", "transformers", "ray", "safetensors"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def _save_rng(path: Path) -> None:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    save_file(tensors, str(path))


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _fsync_tree(path: Path) -> None:
    for dirpath, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished folder into place (replacing an older save of the same step)."""
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    _fsync_dir(final.parent)


def _write_pointer(root: Path, pointer: str, name: str) -> None:
    write_text_atomic(root / pointer, name + "\n")


def _update_pointers(root: Path, name: str, metrics: dict[str, float],
                     retention: RetentionConfig) -> None:
    _write_pointer(root, "latest", name)
    key = retention.best_metric
    if key is None:
        return
    if key not in metrics:
        raise KeyError(f"checkpoint.best_metric {key!r} is not among the metrics {sorted(metrics)}")
    best = _read_pointer(root, "best")
    if best is None or _better(metrics[key], read_metadata(best)["metrics"][key], retention.best_mode):
        _write_pointer(root, "best", name)


def _better(new: float, old: float, mode: str) -> bool:
    return new < old if mode == "min" else new > old


def _prune(root: Path, retention: RetentionConfig) -> None:
    keep = {p.name for p in list_checkpoints(root)[-retention.keep_last:]}
    best = _read_pointer(root, "best")
    if best is not None:
        keep.add(best.name)
    for path in list_checkpoints(root):
        if path.name not in keep:
            shutil.rmtree(path)


def _remove_stale_tmp(root: Path) -> None:
    for path in root.glob(".tmp-*"):
        log.warning("removing an unfinished checkpoint %s", path)
        shutil.rmtree(path, ignore_errors=True)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ---------------------------------------------------------------- finding and reading


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest step first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / "augtrain.json").is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def _read_pointer(root: Path, pointer: str) -> Path | None:
    path = root / pointer
    if not path.is_file():
        return None
    target = root / path.read_text().strip()
    return target if (target / "augtrain.json").is_file() else None


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint (the `latest` pointer, else the highest step)."""
    root = Path(root)
    found = _read_pointer(root, "latest")
    if found is None:
        complete = list_checkpoints(root)
        found = complete[-1] if complete else None
    return found


def best_checkpoint(root: str | Path) -> Path | None:
    return _read_pointer(Path(root), "best")


def read_metadata(checkpoint: str | Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / "augtrain.json").read_text())


def load_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The consolidated weights, with the keys of the trained module (safetensors only)."""
    checkpoint = Path(checkpoint)
    state = load_file(str(checkpoint / "model.safetensors"))
    prefix = read_metadata(checkpoint).get("transformers_prefix") or ""
    return {prefix + k: v for k, v in state.items()}


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or a pretraining output root (its ``latest``)."""
    path = Path(path).absolute()
    if (path / "augtrain.json").is_file():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"{path}: not a checkpoint (no augtrain.json) and no complete checkpoint under it")
    return found


def initial_weights(checkpoint: str | os.PathLike, model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The weights of ``checkpoint`` (a directory or a run's checkpoints folder) that start ``model``
    (``model.init``), and the names of the model's own that it leaves at their initialisation.
    Every weight it holds must be one of the model's with the same shape (a ValueError names the
    first that is not), so that a wrong checkpoint is refused rather than half-loaded."""
    path = resolve_checkpoint(checkpoint)
    state = load_state_dict(path)
    own = model.state_dict()
    for name, tensor in state.items():
        if name not in own:
            raise ValueError(f"model.init {path}: its weight {name!r} is not one of the "
                             f"{type(model).__name__}'s (is it another architecture?)")
        if tuple(own[name].shape) != tuple(tensor.shape):
            raise ValueError(f"model.init {path}: its weight {name!r} has shape {tuple(tensor.shape)}, the "
                             f"{type(model).__name__}'s {tuple(own[name].shape)}")
    return state, [name for name in own if name not in state]


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the trained module (objective or encoder) from its spec and load its weights."""
    spec = read_metadata(checkpoint)["model"]
    if spec is None:
        raise ValueError(f"{checkpoint}: no model spec saved (the model was not built by "
                         "augtrain.models); load model.safetensors with load_state_dict()")
    model = build_from_spec(spec)
    model.load_state_dict(load_state_dict(checkpoint), strict=True)
    return model.to(device)


# ---------------------------------------------------------------- resuming


def needs_universal(checkpoint: str | Path, zero_stage: int, world_size: int) -> bool:
    """Whether resuming ``checkpoint`` on ``world_size`` workers at ``zero_stage`` must go through
    a universal checkpoint: ZeRO 1-3 shards are tied to the world size they were saved at (ZeRO 0
    state is whole on every rank and loads at any size). ValueError for what cannot resume."""
    saved = read_metadata(checkpoint).get("engine") or {}
    saved_stage, saved_world = saved.get("zero_stage", zero_stage), saved.get("world_size", world_size)
    if saved_stage != zero_stage:  # the world size may change, the stage may not
        raise ValueError(f"{checkpoint}: saved with ZeRO stage {saved_stage}, resumed with {zero_stage}; "
                         f"set engine.zero_stage back to {saved_stage} to resume it")
    return zero_stage > 0 and saved_world != world_size


def ensure_universal(checkpoint: str | Path, rank: int) -> Path:
    """Collective: rank 0 converts the checkpoint's ZeRO shards into DeepSpeed's universal,
    world-size-independent layout (``deepspeed/universal``, once: written under a temporary name
    and renamed); every rank waits for it. Returns the folder."""
    ds_dir = Path(checkpoint) / "deepspeed"
    final = ds_dir / UNIVERSAL_TAG
    if rank == 0 and not final.is_dir():
        from types import SimpleNamespace

        from deepspeed.checkpoint import ds_to_universal

        tmp = ds_dir / f".tmp-{UNIVERSAL_TAG}"
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("%s: converting the ZeRO shards to a universal checkpoint", checkpoint)
        with _safe_torch_load():
            ds_to_universal.main(SimpleNamespace(input_folder=str(ds_dir / DS_TAG), output_folder=str(tmp),
                                                 num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False,
                                                 strict=True,
                                                 # a checkpoint saved before save_checkpoint recorded
                                                 # universal_checkpoint_info converts too
                                                 inject_missing_state=True))
        (ds_dir / "latest_universal").unlink(missing_ok=True)  # names the temporary folder
        os.rename(tmp, final)
    _barrier()
    if not final.is_dir():
        raise FileNotFoundError(f"{final}: the universal checkpoint is not visible on rank {rank} "
                                "(checkpoints must be on a filesystem every worker sees)")
    return final


def resume(engine: TrainEngine, checkpoint: str | Path, universal: bool = False) -> dict[str, Any]:
    """Restore model, optimizer, LR schedule and this rank's RNG; returns the metadata
    (step, config, policy, data_position, metrics) for the caller to restore the rest.

    ``universal``: the checkpoint was saved at another world size (``needs_universal``); its
    ZeRO shards are re-partitioned for this one through DeepSpeed's universal checkpoint (the
    engine must have been built with ``load_universal``; ``ensure_universal`` converts first).
    DeepSpeed's universal load leaves three things behind that are restored here: the module's
    buffers (BatchNorm statistics: from ``model.safetensors``) and, under ZeRO 3, the optimizer
    groups' own hyperparameters (it copies the first group's to all, so biases and norms would
    get weight decay) and one AdamW step counter per group (it shares one tensor among them, and
    AdamW advances it once per group)."""
    checkpoint = Path(checkpoint)
    ds_dir = checkpoint / "deepspeed"
    _load_safely(engine.engine)
    if universal:
        groups = [{k: v for k, v in g.items() if k != "params"} for g in _base_optimizer(engine).param_groups]
        with _safe_torch_load():
            path, _ = engine.engine.load_checkpoint(str(ds_dir), tag=UNIVERSAL_TAG, load_optimizer_states=True,
                                                   load_lr_scheduler_states=True)
        if path is not None:
            _restore_after_universal(engine, checkpoint, groups)
    else:
        path, _ = engine.engine.load_checkpoint(str(ds_dir), tag=DS_TAG, load_optimizer_states=True,
                                               load_lr_scheduler_states=True)
    if path is None:
        raise FileNotFoundError(f"{ds_dir}: no DeepSpeed state to resume from")
    _load_rng(ds_dir / f"rng-rank{engine.rank:05d}.safetensors", quiet=universal)
    return read_metadata(checkpoint)


def _base_optimizer(engine: TrainEngine) -> torch.optim.Optimizer:
    """The torch optimizer inside DeepSpeed's ZeRO wrapper."""
    opt = engine.engine.optimizer
    return getattr(opt, "optimizer", opt)


def _restore_after_universal(engine: TrainEngine, checkpoint: Path, groups: list[dict[str, Any]]) -> None:
    state = load_state_dict(checkpoint)
    with torch.no_grad():
        for name, buffer in engine.module.named_buffers():
            if name not in state:
                raise KeyError(f"{checkpoint}: buffer {name} is not in model.safetensors")
            buffer.copy_(state[name])
    if engine.config.zero_stage != 3:
        return
    base = _base_optimizer(engine)
    for group, own in zip(base.param_groups, groups):
        group.update({k: v for k, v in own.items() if k not in ("lr", "initial_lr")})
    for param in getattr(engine.engine.optimizer, "fp32_partitioned_groups_flat", []):
        if "step" in base.state.get(param, {}):
            base.state[param]["step"] = base.state[param]["step"].clone()


def _load_rng(path: Path, quiet: bool = False) -> None:
    if not path.is_file():  # a rank the saving run did not have
        (log.info if quiet else log.warning)("%s missing (different world size?): RNG not restored", path)
        return
    tensors = load_file(str(path))
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def _deepspeed_safe_globals() -> list[type]:
    """The plain state classes DeepSpeed pickles into its checkpoints."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def _weights_only(load: Callable[..., Any]) -> Callable[..., Any]:
    """``load`` (``torch.load``) reading with ``weights_only=True``, DeepSpeed's plain state
    classes allowed."""
    allowed = _deepspeed_safe_globals()

    def safe(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        with torch.serialization.safe_globals(allowed):
            return load(*args, **kwargs)

    return safe


@contextlib.contextmanager
def _safe_torch_load() -> Iterator[None]:
    """``torch.load`` reads with ``weights_only=True`` while the block runs: DeepSpeed's
    universal-checkpoint code calls it with ``weights_only=False``."""
    original = torch.load
    torch.load = _weights_only(original)
    try:
        yield
    finally:
        torch.load = original


def _load_safely(ds_engine: Any) -> None:
    """Make this engine read its checkpoint files with `torch.load(weights_only=True)`."""
    ds_engine.checkpoint_engine.load = _weights_only(torch.load)
