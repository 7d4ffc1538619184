"""From shards to trained models, in three layers that import downward only:

    data/      the shard format, writing and inspecting shards, manifests, storage, corpora
               (sources), the deterministic Ray Data reader (partition, position, bad data)
    train/     the DeepSpeed engine, the per-worker pretraining loop, checkpoints, the
               experiment config and the pretraining driver under Ray Train
    finetune/  labelled subsets, fine-tuning sessions and runs, the controls

``augment`` and ``models`` are below this package; ``tune`` and ``cluster`` are above it.
"""
