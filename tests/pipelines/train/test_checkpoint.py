"""Checkpoints in one process: layout, from_pretrained, retention, safe loading, kill -9 mid-save."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from augtrain.models import create_objective
from augtrain.pipelines.train import checkpoint as C
from augtrain.pipelines.train.engine import EngineConfig, build_engine, train_step

# ZeRO and checkpoint mechanics, checked exactly in fp32 (`precision: auto` is bf16 on a CPU
# with AMX; tests/pipelines/train/test_engine.py trains in bf16)
PRECISION = "fp32"

REPO = Path(__file__).resolve().parents[3]


def _simclr_engine(stage: int = 2):
    torch.manual_seed(0)
    objective = create_objective("simclr", encoder="cnn-tiny", proj_hidden_dim=32, proj_dim=16)
    return build_engine(objective, EngineConfig(precision=PRECISION, zero_stage=stage, micro_batch_size=4,
                                                total_steps=10))


def _step(engine, seed: int = 0) -> float:
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return train_step(engine, [x, x.flip(-1)]).loss


@pytest.mark.timeout(120)
def test_layout_and_metadata(tmp_path: Path):
    engine = _simclr_engine()
    _step(engine)
    ckpt = C.save_checkpoint(engine, tmp_path, 1, config={"lr": 0.1}, policy={"ops": ["flip"]},
                             data_position={"epoch": 0, "consumed": 4}, metrics={"loss": 2.5})
    assert ckpt == tmp_path / "step-00000001"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "augtrain.json", "config.json", "deepspeed", "model.safetensors"]
    assert (ckpt / "deepspeed" / "state").is_dir() and not list(tmp_path.glob(".tmp-*"))
    meta = C.read_metadata(ckpt)
    assert meta["config"] == {"lr": 0.1} and meta["policy"] == {"ops": ["flip"]}
    assert meta["data_position"] == {"epoch": 0, "consumed": 4} and meta["metrics"] == {"loss": 2.5}
    assert meta["model"]["objective"] == "simclr" and meta["engine"]["zero_stage"] == 2
    assert {"torch", "deepspeed", "transformers", "python"} <= set(meta["versions"])
    assert C.latest_checkpoint(tmp_path) == ckpt

    state = C.load_state_dict(ckpt)
    live = engine.module.state_dict()
    assert state.keys() == live.keys()
    for k in state:
        torch.testing.assert_close(state[k], live[k], rtol=0, atol=0)


@pytest.mark.timeout(120)
def test_mae_checkpoint_loads_with_from_pretrained(tmp_path: Path):
    from transformers import ViTMAEForPreTraining

    torch.manual_seed(0)
    engine = build_engine(create_objective("mae", encoder="vit-micro"),
                          EngineConfig(precision=PRECISION, zero_stage=0, micro_batch_size=4, total_steps=10))
    train_step(engine, [torch.rand(4, 3, 32, 32)])
    ckpt = C.save_checkpoint(engine, tmp_path, 1)
    assert json.loads((ckpt / "config.json").read_text())["model_type"] == "vit_mae"

    loaded = ViTMAEForPreTraining.from_pretrained(ckpt).eval()
    live = engine.module.mae.eval()
    x, noise = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=x, noise=noise).logits,
                                   live(pixel_values=x, noise=noise).logits, rtol=0, atol=0)
    assert type(C.load_model(ckpt)).__name__ == "MAE"


@pytest.mark.timeout(120)
def test_keep_last_and_best(tmp_path: Path):
    engine = _simclr_engine(stage=0)
    retention = C.RetentionConfig(keep_last=2, best_metric="loss", best_mode="min")
    for step, loss in zip(range(1, 6), [5.0, 1.0, 4.0, 3.0, 2.0]):
        C.save_checkpoint(engine, tmp_path, step, metrics={"loss": loss}, retention=retention)
    assert [p.name for p in C.list_checkpoints(tmp_path)] == [
        "step-00000002", "step-00000004", "step-00000005"]
    assert C.best_checkpoint(tmp_path).name == "step-00000002"
    assert C.latest_checkpoint(tmp_path).name == "step-00000005"
    with pytest.raises(KeyError, match="best_metric"):
        C.save_checkpoint(engine, tmp_path, 6, metrics={"acc": 1.0}, retention=retention)


class _Planted:
    """Unpickling this would create a file: what a malicious checkpoint could do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.timeout(120)
def test_resume_refuses_pickled_code(tmp_path: Path):
    engine = _simclr_engine(stage=0)
    _step(engine)
    ckpt = C.save_checkpoint(engine, tmp_path / "run", 1)
    states = ckpt / "deepspeed" / "state" / "mp_rank_00_model_states.pt"
    marker = tmp_path / "code-ran"
    torch.save({"module": _Planted(str(marker))}, states)

    with pytest.raises(pickle.UnpicklingError):
        C.resume(_simclr_engine(stage=0), ckpt)
    assert not marker.exists()


_CHILD = textwrap.dedent("""
    import sys, time, torch
    from pathlib import Path
    from augtrain.models import create_objective
    from augtrain.pipelines.train import checkpoint as C
    from augtrain.pipelines.train.engine import EngineConfig, build_engine, train_step

    root, stall_in = Path(sys.argv[1]), sys.argv[2]
    torch.manual_seed(0)
    objective = create_objective("simclr", encoder="cnn-tiny", proj_hidden_dim=32, proj_dim=16)
    engine = build_engine(objective, EngineConfig(precision="fp32", zero_stage=2, micro_batch_size=4,
                                                  total_steps=10))
    x, probe = torch.rand(4, 3, 32, 32), torch.rand(2, 3, 32, 32)
    train_step(engine, [x, x.flip(-1)])
    C.save_checkpoint(engine, root, 1, metrics={"loss": 1.0})
    with torch.no_grad():
        torch.save(engine.module.eval().encoder(probe), root.parent / "expected.pt")
        torch.save(probe, root.parent / "probe.pt")
    engine.module.train()
    train_step(engine, [x, x.flip(-1)])

    real = getattr(C, stall_in)
    def stall(*args, **kwargs):
        result = real(*args, **kwargs)
        (root.parent / "in-save").touch()
        time.sleep(600)
        return result
    setattr(C, stall_in, stall)
    C.save_checkpoint(engine, root, 2, metrics={"loss": 0.5})
""")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("stall_in", ["consolidated_state_dict", "_write_model"])
def test_kill_9_during_save_keeps_the_previous_checkpoint(tmp_path: Path, stall_in: str):
    root = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), stall_in], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 150
    while not (tmp_path / "in-save").exists():
        assert child.poll() is None, child.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the child never reached the second save"
        time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stderr.close()

    # the half-written save is only a temporary folder; the previous one is still latest
    assert (root / ".tmp-step-00000002" / "deepspeed" / "state").is_dir()
    assert not (root / ".tmp-step-00000002" / "augtrain.json").exists()
    assert [p.name for p in C.list_checkpoints(root)] == ["step-00000001"]
    previous = C.latest_checkpoint(root)
    assert previous.name == "step-00000001"
    model = C.load_model(previous).eval()
    probe = torch.load(tmp_path / "probe.pt", weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(probe),
                                   torch.load(tmp_path / "expected.pt", weights_only=True),
                                   rtol=0, atol=0)

    # a restarted run resumes from it, and its next save clears the leftover
    engine = _simclr_engine()
    assert C.resume(engine, previous)["step"] == 1
    C.save_checkpoint(engine, root, 2)
    assert not list(root.glob(".tmp-*"))
    assert C.latest_checkpoint(root).name == "step-00000002"
