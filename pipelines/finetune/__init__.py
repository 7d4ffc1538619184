"""Fine-tuning a pretrained encoder on a labelled subset, and evaluating it on a held-out split.

Three modes: ``full`` (every weight trains, optionally with layer-wise LR decay), ``linear``
(a linear probe: the encoder is frozen, BatchNorm statistics included) and ``scratch`` (the
same architecture from random weights: the control). The labelled subset (a count or a
fraction of the pool, stratified and seeded) is written once as a small shard set
(``subsets.prepare_subsets``) and held in each worker's memory; every epoch it goes
through the augmentation policy in force at that epoch (a policy, or a schedule of them),
with a generator derived from (seed, epoch, rank).

    cfg = FinetuneConfig(labels=600, val_labels=1000, mode="full", policy="trivialaugment")
    paths = prepare_data(cfg, out_dir)                       # driver, once
    session = FinetuneSession(cfg, load_data(paths, cfg), checkpoint="runs/fmnist-simclr")
    for epoch in range(cfg.epochs):
        metrics = session.run_epoch(policy_source)          # train, then validate
    session.evaluate("test")

``run_finetune`` runs the same session under a Ray Train ``TorchTrainer`` (N workers, DDP on
gloo or NCCL); ``finetune_worker`` is its per-worker entry. Checkpoints are small directories
(``model.safetensors``, ``optimizer.safetensors``, ``finetune.json``) read back without
unpickling anything.

    config    the ``finetune`` section, ``steps: auto``
    subsets   stratified, seeded labelled and validation subsets written as shards
    data      the subsets and the test split in memory
    model     encoder + head, optimizer groups, LR schedule
    session   one worker's epochs, evaluation and checkpoints
    run       a whole fine-tune, locally or under Ray Train
    controls  logistic regression on raw inputs, kNN of a checkpoint
"""

from augtrain.pipelines.finetune.config import (
    FinetuneConfig,
    auto_steps,
    budget_epochs,
    finetune_config_from_experiment,
    parse_finetune_config,
)
from augtrain.pipelines.finetune.data import DataPaths, FinetuneData, load_data, prepare_data
from augtrain.pipelines.finetune.model import build_classifier, encoder_blocks, load_encoder, param_groups, resolve_checkpoint
from augtrain.pipelines.finetune.run import (
    FinetuneResult,
    evaluate_checkpoint,
    finetune_local,
    finetune_worker,
    predict_checkpoints,
    run_finetune,
)
from augtrain.pipelines.finetune.session import STATE_FILE, FinetuneSession, PolicySource, epoch_order, policy_at

__all__ = [
    "STATE_FILE", "DataPaths", "FinetuneConfig", "FinetuneData", "FinetuneResult", "FinetuneSession", "PolicySource",
    "auto_steps", "budget_epochs", "build_classifier", "encoder_blocks", "epoch_order", "evaluate_checkpoint", "finetune_config_from_experiment",
    "finetune_local", "finetune_worker", "load_data", "load_encoder", "param_groups", "parse_finetune_config",
    "policy_at", "predict_checkpoints", "prepare_data", "resolve_checkpoint", "run_finetune",
]  # fmt: skip
