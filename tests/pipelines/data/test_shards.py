"""Writing, resolving and inspecting shards (no Ray needed)."""

import json
import os
import subprocess

import numpy as np
import pytest

from augtrain.cluster.cli import main
from augtrain.pipelines.data.manifest import Manifest
from augtrain.pipelines.data.inspect_shards import inspect_shards
from augtrain.pipelines.data.shard_set import ShardSpecError, open_shards
from augtrain.pipelines.data.writer import WriteOptions, sha256_file, write_shards
from augtrain.pipelines.data.sources import SourceError, open_source
from augtrain.pipelines.data.wds_format import iter_raw_samples, split_member_name


def test_member_names_split_at_the_first_dot_of_the_file_name():
    assert split_member_name("a/b.c/key.seg.png") == ("a/b.c/key", "seg.png")
    assert split_member_name("./k001.CLS") == ("./k001", "cls")
    assert split_member_name(".hidden") is None and split_member_name("noext") is None


def test_manifest_records_counts_hashes_and_classes(digits_shards):
    manifest = Manifest.from_json(open(os.path.join(digits_shards, "manifest.json")).read())
    assert manifest.num_samples == 600 and len(manifest.shards) == 6
    assert manifest.class_names == [str(d) for d in range(10)] and manifest.extensions == ["cls", "png"]
    first = manifest.shards[0]
    assert first.sha256 == sha256_file(os.path.join(digits_shards, first.name))


def test_writing_is_reproducible_and_shuffles_classes_across_shards(tmp_path, digits_shards):
    again = write_shards(open_source("digits", "train"), str(tmp_path), "train",
                         WriteOptions(samples_per_shard=100, limit=600), progress=lambda _: None)
    original = Manifest.from_json(open(os.path.join(digits_shards, "manifest.json")).read())
    assert [s.sha256 for s in again.shards] == [s.sha256 for s in original.shards]
    report = inspect_shards(open_shards(digits_shards))
    assert all(len(s.classes) == 10 for s in report.shards)


def test_inspect_counts_and_lists_every_corrupt_member(corrupt_shards):
    report = inspect_shards(open_shards(str(corrupt_shards)))
    assert [s.samples for s in report.shards] == [10, 10, 4]
    bad = {(r.shard, r.key, r.reason) for r in report.skipped.records}
    assert bad == {("shard-a.tar", "a03", "undecodable image"), ("shard-a.tar", "a05", "missing label"),
                   ("shard-a.tar", "a07", "non-integer label"), ("shard-c.tar", "c03", "unreadable tar member")}
    assert not report.ok


def test_inspect_cli_strict_exit_status(corrupt_shards, digits_shards, capsys):
    assert main(["shards", "inspect", str(corrupt_shards)]) == 0
    assert main(["shards", "inspect", "--strict", str(corrupt_shards)]) == 1
    out = capsys.readouterr().out
    assert "shard-a.tar key=a03: undecodable image" in out and "shard-c.tar key=c03" in out
    assert main(["shards", "inspect", "--strict", "--json", digits_shards]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 600 and report["ok"] and sum(report["classes"].values()) == 600


def test_manifest_mismatch_and_tampering_are_reported(tmp_path):
    write_shards(open_source("digits", "test"), str(tmp_path), "test", WriteOptions(samples_per_shard=50, limit=100),
                 progress=lambda _: None)
    path = tmp_path / "shard-000001.tar"
    data = bytearray(path.read_bytes())
    data[700] ^= 0xFF  # inside the first member's data
    path.write_bytes(bytes(data))
    report = inspect_shards(open_shards(str(tmp_path)))
    assert report.shards[1].problems and "sha256" in report.shards[1].problems[-1]


def test_shard_specs(digits_shards, tmp_path):
    names = sorted(n for n in os.listdir(digits_shards) if n.endswith(".tar"))
    assert len(open_shards(os.path.join(digits_shards, "shard-{000000..000002}.tar")).urls) == 3
    assert open_shards(os.path.join(digits_shards, "*.tar")).counts == (100,) * 6
    assert open_shards("file://" + os.path.join(digits_shards, names[0])).counts == (100,)
    with pytest.raises(ShardSpecError, match="no such shard file"):
        open_shards(str(tmp_path / "missing-{0..1}.tar"))
    with pytest.raises(ShardSpecError, match="no .tar shards"):
        open_shards(str(tmp_path))


def test_gnu_tar_shards_are_read(tmp_path):
    src = tmp_path / "files"
    src.mkdir()
    for i in range(5):
        (src / f"k{i}.cls").write_text(str(i))
        (src / f"k{i}.txt").write_text(f"sample {i}")
    subprocess.run(["tar", "--sort=name", "-cf", str(tmp_path / "gnu.tar"), "-C", str(src), "."], check=True)
    with open(tmp_path / "gnu.tar", "rb") as f:
        samples = list(iter_raw_samples(f))
    assert [(s.key, sorted(s.members)) for s in samples] == [(f"./k{i}", ["cls", "txt"]) for i in range(5)]


def test_bad_sources_name_what_is_wrong(tmp_path):
    with pytest.raises(SourceError, match="unknown source"):
        open_source("cifar", "train")
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 4, 4), np.int16), y=np.zeros(3, np.int64))  # float: series
    with pytest.raises(SourceError, match="'x' must be uint8 images .* or float series"):
        open_source(f"npz:{tmp_path / 'bad.npz'}", "train")
    assert main(["shards", "write", "--source", f"imagefolder:{tmp_path}/none", "--out", str(tmp_path / "o")]) == 2


@pytest.mark.parametrize("fmt", ["USTAR_FORMAT", "GNU_FORMAT", "PAX_FORMAT"])
def test_tar_reader_handles_long_names_in_every_format(tmp_path, fmt):
    import io
    import tarfile

    path = tmp_path / "t.tar"
    long_dir = "d" * 120 if fmt != "USTAR_FORMAT" else "d" * 60
    with tarfile.open(path, "w", format=getattr(tarfile, fmt)) as tar:
        tar.addfile(_dir_info(long_dir))
        for i in range(3):
            for ext, data in (("cls", str(i).encode()), ("txt", b"x" * (700 * i))):
                info = tarfile.TarInfo(f"{long_dir}/sample{i}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with open(path, "rb") as f:
        samples = list(iter_raw_samples(f))
    assert [s.key for s in samples] == [f"{long_dir}/sample{i}" for i in range(3)]
    assert [len(s.members["txt"]) for s in samples] == [0, 700, 1400] and all(s.error is None for s in samples)


def _dir_info(name):
    import tarfile

    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def test_tar_reader_reports_garbage_instead_of_raising(tmp_path):
    import io

    good = io.BytesIO()
    from augtrain.pipelines.data.wds_format import ShardTarWriter

    writer = ShardTarWriter(good)
    writer.write("k0", {"cls": b"1"})
    writer.write("k1", {"cls": b"2"})
    writer.close()
    data = bytearray(good.getvalue())
    data[1024:1100] = b"\xff" * 76  # the second sample's header
    samples = list(iter_raw_samples(io.BytesIO(bytes(data))))
    # k0 may have had more members after the garbage: it is not trusted either
    assert [s.key for s in samples] == ["k0"] and "checksum" in samples[0].error
    garbage_first = b"\x01" * 512 + bytes(data[512:])
    assert [(s.key, "checksum" in s.error) for s in iter_raw_samples(io.BytesIO(garbage_first))] == [("<end of shard>", True)]
