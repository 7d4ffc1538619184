"""Ensembles of fine-tunes: the members' probabilities are exactly what each fine-tune predicted
on its own test split, the ensemble is their mean, members trained on other data are refused,
and ``augtrain ensemble`` tests and records one end to end (real fine-tunes on real shards)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from augtrain.cluster.cli import main
from augtrain.pipelines.finetune import FinetuneConfig, FinetuneSession, finetune_local, load_data, prepare_data
from augtrain.pipelines.finetune.ensemble import check_members, combine, evaluate_ensemble
from augtrain.pipelines.finetune.saved import load_classifier, member_probabilities
from augtrain.pipelines.finetune.subsets import load_arrays


@pytest.fixture(scope="module")
def members(digits_splits, tmp_path_factory):
    """Two members on the same labelled subset: different architectures (widths) and seeds."""
    train, test = digits_splits
    out = tmp_path_factory.mktemp("members")
    found = []
    for i, widths in enumerate(([8, 16], [16, 16])):
        cfg = FinetuneConfig(train=train, test=test, labels=100, val_labels=0, channels=1, epochs=2, batch_size=32,
                             lr=3e-3, policy="none", mode="scratch", encoder="cnn-tiny", seed=i,
                             encoder_kwargs={"in_chans": 1, "widths": widths})
        paths = prepare_data(cfg, str(out / "data"))
        result = finetune_local(cfg, paths, None, cfg.policy, out_dir=str(out / f"m{i}"))
        found.append((load_classifier(result.checkpoint), result.metrics["test_acc"], cfg, paths))
    return found


def test_members_predict_as_their_fine_tunes_did_and_the_ensemble_is_their_mean(members):
    models = [m for m, *_ in members]
    result = evaluate_ensemble(models)
    # each member, reloaded from its checkpoint, scores exactly what its fine-tune measured at its end
    for (_, test_acc, _, _), row in zip(members, result["members"]):
        assert row["test_acc"] == pytest.approx(test_acc, abs=1e-12)
        assert row["encoder"] == "cnn-tiny" and row["mode"] == "scratch"
    # and its probabilities are the session's softmax on the same split, in the same order
    model, _, cfg, paths = members[0]
    session = FinetuneSession(cfg, load_data(paths, cfg, ("train", "test")), None)
    session.restore(model.path, optimizer=False)
    values, labels, _ = load_arrays(cfg.test, 1, modality="image")
    probs = member_probabilities(models, values, 10)
    assert np.array_equal(probs[0].argmax(1), session.predict("test"))
    expected = combine(probs).argmax(1)
    assert np.allclose(combine(probs), (probs[0] + probs[1]) / 2)
    assert result["test_acc"] == pytest.approx(float((expected == labels).mean()))
    assert result["samples"] == len(labels) and result["skipped"] == 0
    assert result["best_member_test_acc"] == max(r["test_acc"] for r in result["members"])
    votes = [p.argmax(1) for p in probs]
    assert result["agreement"] == pytest.approx(float((votes[0] == votes[1]).mean()))
    assert len(result["per_class_acc"]) == 10


def test_members_must_share_their_data_and_test_split(members, digits_splits):
    (a, *_), (b, *_) = members
    with pytest.raises(ValueError, match="two or more"):
        check_members([a])
    other = type(b)(b.cfg.with_updates(label_seed=7), b.weights, None, path=b.path)
    with pytest.raises(ValueError, match="label_seed"):
        check_members([a, other])
    moved = type(b)(b.cfg.with_updates(test=digits_splits[0]), b.weights, None, path=b.path)
    with pytest.raises(ValueError, match="different splits"):
        check_members([a, moved])
    assert check_members([a, moved], split=digits_splits[1]) == digits_splits[1]  # named explicitly
    untested = type(b)(b.cfg.with_updates(test=None), b.weights, None, path=b.path)
    with pytest.raises(ValueError, match="no test split"):
        check_members([untested, a])


def test_the_ensemble_command_prints_and_records_it(members, tmp_path, capsys):
    dirs = [m.path for m, *_ in members]
    assert main(["ensemble", "--member", dirs[0], "--member", dirs[1], "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "ensemble.json").read_text())
    assert f"{100 * record['test_acc']:6.2f}" in printed and "ensemble (mean probability)" in printed
    assert [m["path"] for m in record["members"]] == dirs
    assert record["test_acc"] == pytest.approx(evaluate_ensemble([m for m, *_ in members])["test_acc"])


def _corrupted_copy(split: str, out, every: bool):
    """A copy of ``split`` with its first image (or every image) replaced by bytes that do not decode."""
    import io
    import shutil
    import tarfile

    shutil.copytree(split, out)
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as src:
            entries = [(m, src.extractfile(m).read()) for m in src.getmembers() if m.isfile()]
        images = [m.name for m, _ in entries if m.name.endswith(".png")]
        broken = set(images if every else images[:1])
        with tarfile.open(shard, "w") as dst:
            for info, data in entries:
                data = b"not a png" if info.name in broken else data
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
        if not every:
            break
    return str(out)


def test_unreadable_test_samples_are_counted_not_lost(members, digits_splits, tmp_path, caplog):
    """A test split with one corrupt image: the ensemble is tested on the rest and says so (as does
    every reader of small splits, in a warning); a split with none readable is refused, naming it."""
    models = [m for m, *_ in members]
    whole = evaluate_ensemble(models)
    one = _corrupted_copy(digits_splits[1], tmp_path / "one", every=False)
    with caplog.at_level("WARNING", logger="augtrain.pipelines.finetune.subsets"):
        result = evaluate_ensemble(models, split=one)
    assert result["skipped"] == 1 and result["samples"] == whole["samples"] - 1
    assert f"{one}: 1 unreadable sample(s) skipped, {result['samples']} read" in caplog.text
    broken = _corrupted_copy(digits_splits[1], tmp_path / "all", every=True)
    with pytest.raises(ValueError, match=f"{broken}: no readable labelled sample"):
        evaluate_ensemble(models, split=broken)
