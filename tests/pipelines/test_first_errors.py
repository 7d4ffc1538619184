"""The errors a user meets first each give one line naming the file or field and what to do,
before any Ray starts, with exit status 2 (the table in docs/errors.md)."""

from __future__ import annotations

import pytest
import yaml

from augtrain.cluster.cli import main


def _config(tmp_path, shards, **cluster) -> str:
    data = {"name": "first-errors", "output": str(tmp_path / "run"), "data": {"train": shards, "channels": 1},
            "augment": {"policy": "simclr", "size": 8},
            "model": {"objective": "simclr", "encoder": "cnn-tiny", "encoder_kwargs": {"in_chans": 1, "widths": [8]}},
            "cluster": {"workers": 2, "cpus_per_worker": 1, **cluster}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


CASES = {
    "a data path that does not exist": (["pretrain", "-c", "{config}", "--set", "data.train={tmp}/nope", "--dry-run"],
                                        "{tmp}/nope: no such shard file"),
    "a shard folder with no shards": (["pretrain", "-c", "{config}", "--set", "data.train={tmp}/empty", "--dry-run"],
                                      "{tmp}/empty: directory has no .tar shards and no manifest.json"),
    "a checkpoint path that is not a checkpoint": (
        ["finetune", "-c", "{config}", "--checkpoint", "{tmp}/empty"],
        "{tmp}/empty: not a checkpoint (no augtrain.json) and no complete checkpoint under it"),
    "a config for the wrong modality": (
        ["pretrain", "-c", "{config}", "--set", "data.modality=series", "--dry-run"],
        "manifest.json: field 'modality' is 'image', but 'series' samples were asked for (data.modality)"),
    "no free CPU for Ray Data": (
        ["pretrain", "-c", "{config}", "--set", "cluster.workers=64"],
        "cluster.workers x cluster.cpus_per_worker = 64 x 1 = 64 CPUs leaves no CPU of the embedded Ray's"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_first_errors_are_one_line_naming_what_to_fix(case, tmp_path, digits_shards, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "empty").mkdir()
    config = _config(tmp_path, digits_shards)
    args, expected = CASES[case]
    fill = {"config": config, "tmp": str(tmp_path)}
    import ray

    running = ray.is_initialized()  # another test's Ray may be up; this command starts none
    assert main([a.format(**fill) for a in args]) == 2
    assert ray.is_initialized() == running
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected.format(**fill) in err[0], err
    assert err[0].startswith("augtrain ") and "Traceback" not in err[0]
