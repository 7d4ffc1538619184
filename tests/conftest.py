"""Shared fixtures: a real local Ray for the session, tiny real shards and a tiny SimCLR checkpoint
made with the project's own engine and checkpoint code, GPU detection."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole session (4 logical CPUs: data tasks need spare CPU)."""
    import ray

    from augtrain.cluster.connect import connect

    if not ray.is_initialized():
        connect(num_cpus=4, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def session_tmp():
    with tempfile.TemporaryDirectory(prefix="augtrain-test-") as d:
        yield d


def make_tiny_checkpoint(root: str) -> str:
    """SimCLR on a 2-stage cnn-tiny, three DeepSpeed (ZeRO 0, CPU) steps, saved as a checkpoint."""
    import torch

    from augtrain.models import create_objective
    from augtrain.pipelines.train.checkpoint import save_checkpoint
    from augtrain.pipelines.train.engine import EngineConfig, build_engine, train_step

    torch.manual_seed(0)
    objective = create_objective("simclr", encoder="cnn-tiny", encoder_kwargs={"in_chans": 1, "widths": [8, 16]},
                                 proj_hidden_dim=16, proj_dim=8)
    engine = build_engine(objective, EngineConfig(zero_stage=0, device="cpu", micro_batch_size=16, total_steps=3,
                                                  base_lr=1e-3, lr_base_batch_size=16))
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        train_step(engine, [torch.randn(16, 1, 8, 8, generator=generator), torch.randn(16, 1, 8, 8, generator=generator)])
    return str(save_checkpoint(engine, root, 3))


def write_digits(root: str) -> tuple[str, str]:
    from augtrain.pipelines.data.writer import WriteOptions, write_shards
    from augtrain.pipelines.data.sources import open_source

    paths = []
    for split in ("train", "test"):
        out = os.path.join(root, f"digits-{split}")
        write_shards(open_source("digits", split), out, split, WriteOptions(samples_per_shard=400),
                     progress=lambda _: None)
        paths.append(out)
    return paths[0], paths[1]


@pytest.fixture(scope="session")
def tiny_checkpoint(session_tmp) -> str:
    return make_tiny_checkpoint(os.path.join(session_tmp, "tune-pretrain"))


@pytest.fixture(scope="session")
def digits_splits(session_tmp) -> tuple[str, str]:
    return write_digits(os.path.join(session_tmp, "tune-digits"))
