"""From shards to trained models, in layers that import downward only:

    modalities/  what a sample of each kind decodes to, how it is augmented and written, how
               its batches become model inputs (image, series, text, and plug-ins)
    data/      the shard format, writing and inspecting shards, manifests, storage, corpora
               (sources), the deterministic Ray Data reader (partition, position, bad data)
    train/     the DeepSpeed engine, the per-worker pretraining loop, checkpoints, the
               experiment config and the pretraining driver under Ray Train
    finetune/  labelled subsets, fine-tuning sessions and runs, the controls

``augment`` and ``models`` are below this package; ``tune`` and ``cluster`` are above it.
"""
