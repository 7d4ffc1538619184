"""Series corpora to shards: the UCR/UEA problems bundled in the aeon wheel (read by aeon's .ts
loader from the wheel's files, standard splits kept) and a user's float arrays (``npz:PATH``);
every value comes back bit-identical."""

from __future__ import annotations

import numpy as np
import pytest

from augtrain.cluster.cli import main
from augtrain.pipelines.data.decode import decode_sample
from augtrain.pipelines.data.series_sources import list_ucr, ucr, ucr_dir
from augtrain.pipelines.data.shard_set import open_shards
from augtrain.pipelines.data.sources import SourceError, open_source
from augtrain.pipelines.data.wds_format import iter_raw_samples
from augtrain.pipelines.data.writer import WriteOptions, write_shards
from augtrain.pipelines.modalities import DecodeSpec, get_modality


def _read_all(directory: str) -> dict[str, dict]:
    spec = DecodeSpec(label_key="cls", channels=None, modality="series")
    out = {}
    for url in open_shards(directory).urls:
        with open(url, "rb") as f:
            for raw in iter_raw_samples(f):
                out[raw.key] = decode_sample(raw, spec, get_modality("series"))
    return out


def test_the_bundled_problems_are_found_without_a_download():
    names = list_ucr()
    assert {"GunPoint", "ArrowHead", "ItalyPowerDemand", "OSULeaf", "BasicMotions"} <= set(names)
    assert all((ucr_dir() / n / f"{n}_TEST.ts").is_file() for n in names)


@pytest.mark.parametrize("split, count", [("train", 50), ("test", 150)])
def test_gunpoint_round_trips_every_key_label_and_value(tmp_path, split, count):
    from aeon.datasets import load_gunpoint  # aeon's own single-problem loader, the reference

    x, y = load_gunpoint(split=split.upper())  # [N, 1, 150] float64, labels '1' / '2'
    source = ucr("GunPoint", split)
    assert (source.modality, source.class_names, len(source)) == ("series", ["1", "2"], count)
    manifest = write_shards(source, str(tmp_path / "s"), split, WriteOptions(samples_per_shard=40, shuffle_seed=0))
    assert (manifest.modality, manifest.length, manifest.channels, manifest.extensions) == (
        "series", 150, 1, ["cls", "npy"])
    decoded = _read_all(str(tmp_path / "s"))
    assert len(decoded) == count
    for key, sample in decoded.items():
        i = int(key)
        assert sample["series"].dtype == np.float32 and sample["series"].shape == (150, 1)
        assert np.array_equal(sample["series"], x[i].T.astype(np.float32))  # bit-identical
        assert source.class_names[sample["label"]] == str(y[i])


def test_multivariate_and_unequal_length_problems(tmp_path):
    motions = ucr("BasicMotions", "train")
    value, label = motions[0]
    assert value.shape == (100, 6) and motions.class_names[label] in {"standing", "running", "walking", "badminton"}
    vowels = write_shards(ucr("JapaneseVowels", "test"), str(tmp_path / "v"), "test", WriteOptions())
    assert (vowels.length, vowels.channels) == (None, 12)  # unequal lengths are kept, and said so
    lengths = {s["series"].shape[0] for s in _read_all(str(tmp_path / "v")).values()}
    assert len(lengths) > 1


def test_a_user_npz_of_float_series_and_its_errors(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 33, 2)).astype(np.float32)
    y = np.arange(7) % 3
    np.savez(tmp_path / "mine.npz", x=x, y=y, class_names=np.array(["a", "b", "c"]))
    source = open_source(f"npz:{tmp_path / 'mine.npz'}", "train")
    assert (source.modality, source.class_names, len(source)) == ("series", ["a", "b", "c"], 7)
    write_shards(source, str(tmp_path / "s"), "train", WriteOptions(samples_per_shard=3))
    for key, sample in _read_all(str(tmp_path / "s")).items():
        assert np.array_equal(sample["series"], x[int(key)]) and sample["label"] == y[int(key)]
    np.savez(tmp_path / "flat.npz", x=x[:, :, 0].astype(np.float64), y=y)  # [N, T]: univariate
    assert open_source(f"npz:{tmp_path / 'flat.npz'}", "train")[0][0].shape == (33, 1)
    x[2, 5, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=y)
    with pytest.raises(SourceError, match=r"nan.npz: series 2 has 1 missing"):
        open_source(f"npz:{tmp_path / 'nan.npz'}", "train")
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 2, 2, 2), dtype=np.float32), y=np.arange(3))
    with pytest.raises(SourceError, match=r"bad.npz: a float 'x' holds series"):
        open_source(f"npz:{tmp_path / 'bad.npz'}", "train")


def test_unknown_problems_and_splits_are_named():
    with pytest.raises(SourceError, match=r"ucr:ECG200: no ECG200_TRAIN.ts in the aeon wheel; bundled problems: .*GunPoint"):
        ucr("ECG200", "train")
    with pytest.raises(SourceError, match="split must be 'train' or 'test'"):
        ucr("GunPoint", "unlabelled")


def test_shards_write_cli_writes_a_ucr_split(tmp_path, capsys):
    out = tmp_path / "arrow"
    assert main(["shards", "write", "--source", "ucr:ArrowHead", "--split", "test", "--out", str(out)]) == 0
    assert "wrote 175 samples" in capsys.readouterr().out
    assert open_shards(str(out)).manifest.length == 251
