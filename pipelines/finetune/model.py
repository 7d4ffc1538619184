"""The classifier a fine-tune trains: a checkpoint's encoder (or the same architecture from
scratch) with a linear head, its optimizer groups (layer-wise LR decay) and its LR schedule."""

from __future__ import annotations

import inspect
import os
from typing import Any

import torch
from torch import nn

from augtrain.models import Classifier, build_from_spec, create_model
from augtrain.pipelines.finetune.config import FinetuneConfig
from augtrain.pipelines.train.checkpoint import load_model, read_metadata, resolve_checkpoint
from augtrain.pipelines.train.engine import lr_factor


def load_encoder(checkpoint: str | os.PathLike, pretrained: bool = True, head_layers: int = 0) -> nn.Module:
    """The encoder of a pretraining checkpoint (``forward_features: [B, C, H, W] -> [B, D]``), with
    the first ``head_layers`` layers of its projection head; ``pretrained=False`` rebuilds the
    same architecture with fresh weights."""
    path = resolve_checkpoint(checkpoint)
    if pretrained:
        model = load_model(path)
    else:
        spec = read_metadata(path)["model"]
        if spec is None:
            raise ValueError(f"{path}: no model spec saved, so the architecture cannot be rebuilt")
        if "objective" in spec and not head_layers:
            return create_model(spec["encoder"], **spec.get("encoder_kwargs", {}))
        model = build_from_spec(spec)
    export = getattr(model, "export_encoder", None)
    if head_layers and (export is None or "head_layers" not in inspect.signature(export).parameters):
        raise ValueError(f"{path}: finetune.head_layers needs an objective with a projection head (SimCLR), "
                         f"not {type(model).__name__}")
    if export is None:
        return model
    return export(head_layers=head_layers) if head_layers else export()


def build_classifier(cfg: FinetuneConfig, checkpoint: str | None, num_classes: int) -> Classifier:
    """Encoder (pretrained, or fresh for ``scratch``) + linear head, seeded by ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    if checkpoint is not None:
        encoder = load_encoder(checkpoint, pretrained=cfg.mode != "scratch", head_layers=cfg.head_layers)
    elif cfg.mode == "scratch" and cfg.encoder:
        encoder = create_model(cfg.encoder, **cfg.encoder_kwargs)
    else:
        raise ValueError(f"finetune.mode {cfg.mode!r} needs a pretraining checkpoint (--checkpoint)"
                         + ("" if cfg.mode != "scratch" else " or finetune.encoder"))
    linear = cfg.mode == "linear"
    return Classifier(encoder, num_classes, freeze_encoder=linear, batch_norm=linear and cfg.probe_batch_norm)


def encoder_blocks(encoder: nn.Module) -> list[nn.Module]:
    """The encoder's blocks from input to output: top-level children, with containers of blocks
    (``Sequential``/``ModuleList`` whose children are themselves modules with children) opened."""
    blocks: list[nn.Module] = []
    for child in encoder.children():
        inner = list(child.children())
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and inner and all(list(c.children()) for c in inner):
            blocks += inner
        elif any(p.numel() for p in child.parameters()):
            blocks.append(child)
    return blocks


def param_groups(model: Classifier, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """Optimizer groups: LR scale ``layer_decay ** (blocks - i)`` for encoder block i (head: 1),
    no weight decay on 1-d parameters (biases, norms). Frozen parameters are left out."""
    blocks = encoder_blocks(model.encoder)
    depth_of: dict[int, int] = {}
    for i, block in enumerate(blocks):
        for p in block.parameters():
            depth_of[id(p)] = i
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth = len(blocks) if not name.startswith("encoder.") else depth_of.get(id(p), 0)
        scale = cfg.layer_decay ** (len(blocks) - depth)
        groups.setdefault((scale, p.ndim <= 1), []).append(p)
    return [{"params": ps, "lr_scale": scale, "weight_decay": 0.0 if no_decay else cfg.weight_decay}
            for (scale, no_decay), ps in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1]))]


def lr_at(cfg: FinetuneConfig, progress: float) -> float:
    """Peak-relative LR at ``progress`` epochs: linear warmup, then cosine to 0 at ``cfg.epochs``
    (a config fixed by ``for_labelled``)."""
    steps = 1000  # resolution of the epoch-continuous schedule
    return lr_factor(int(progress * steps), int(cfg.resolved_warmup_epochs * steps), cfg.resolved_epochs * steps)
