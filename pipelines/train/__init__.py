"""Pretraining: the DeepSpeed engine (``engine``), the per-worker loop over streamed batches
(``loop``), checkpoints that resume exactly (``checkpoint``), the experiment file
(``config``), augmentation inside the worker (``worker_augment``), the loss plot, and the
driver that plans and runs it under Ray Train (``pretrain``)."""
