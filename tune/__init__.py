"""Ray Tune on a pretrained checkpoint: policy search (PBT in PBA's encoding, schedule replay),
baselines, fine-tune HPO (ASHA + Optuna) and result files.

    pba        encoding, explore, schedules from PBT logs (pure)
    config     the ``search`` section (SearchConfig)
    resources  trials at a time from the cluster's CPUs (pure)
    trainable  the Tune trial function (local, or a TorchTrainer per iteration)
    search     the stages and their resume
    report     best policy, DALI export, schedule plot, trials and comparison tables
"""
