"""The shipped modalities: txt, npy and json members decode through their modality (with counted,
named errors), values round-trip through the shard writer, batches become tensors, and shards of
one modality are refused where another is asked for, naming the manifest and its field."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

from augtrain.pipelines.data.decode import decode_sample
from augtrain.pipelines.data.inspect_shards import inspect_shards
from augtrain.pipelines.data.shard_set import ShardSpecError, check_modality, open_shards
from augtrain.pipelines.data.sources import Source
from augtrain.pipelines.data.wds_format import RawSample
from augtrain.pipelines.data.writer import WriteOptions, write_shards
from augtrain.pipelines.modalities import DecodeSpec, ModalityError, SampleError, get_modality, list_modalities


def _raw(**members: bytes) -> RawSample:
    return RawSample(key="k", members={**members, "cls": b"2"})


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def test_the_shipped_modalities_are_registered():
    assert {"image", "series", "text"} <= set(list_modalities())
    with pytest.raises(ModalityError, match="unknown modality 'audio'; registered: .*image"):
        get_modality("audio")


def test_text_decodes_txt_and_json_members():
    spec = DecodeSpec(modality="text")
    assert decode_sample(_raw(txt="héllo".encode()), spec) == {"text": "héllo", "label": 2}
    assert decode_sample(_raw(json=json.dumps({"text": "a b", "id": 3}).encode()), spec)["text"] == "a b"
    for members, reason in (({"txt": b"\xff\xfe"}, "undecodable text"), ({"json": b"{"}, "unreadable json"),
                            ({"json": b'{"body": "x"}'}, "no text field"), ({"png": b"x"}, "no usable member")):
        with pytest.raises(SampleError) as info:
            decode_sample(_raw(**members), spec)
        assert info.value.reason == reason


def test_series_decodes_npy_and_json_members_to_time_by_channel():
    spec = DecodeSpec(modality="series")
    one = decode_sample(_raw(npy=_npy(np.arange(5, dtype=np.int16))), spec)["series"]
    assert one.shape == (5, 1) and one.dtype == np.float32
    rows = decode_sample(_raw(json=b"[[1, 2], [3, 4], [5, 6]]"), spec)["series"]
    np.testing.assert_array_equal(rows, [[1, 2], [3, 4], [5, 6]])
    for members, reason in (({"npy": _npy(np.zeros((2, 2, 2)))}, "bad series shape"),
                            ({"npy": _npy([1.0, np.nan])}, "non-finite series values"),
                            ({"npy": b"not npy"}, "unreadable npy array"),
                            ({"json": b'["a", "b"]'}, "non-numeric series")):
        with pytest.raises(SampleError) as info:
            decode_sample(_raw(**members), spec)
        assert info.value.reason == reason


def test_batches_become_the_encoder_inputs():
    series = get_modality("series")
    column = np.stack([np.arange(6, dtype=np.float32).reshape(3, 2)] * 4)  # [B=4, T=3, C=2]
    x = series.to_tensor(column, (1.0, 2.0), (2.0, 2.0))
    assert tuple(x.shape) == (4, 2, 3) and float(x[0, 1, 0]) == pytest.approx((1.0 - 2.0) / 2.0)
    assert series.resize(column[0], 5).shape == (5, 2)
    text = get_modality("text")
    ids = text.to_tensor(np.array(["ab", "c"], dtype=object), (0.5,), (0.5,))
    assert ids.tolist() == [[ord("a") + 1, ord("b") + 1], [ord("c") + 1, 0]]
    features = text.raw_features(np.array(["aab", ""], dtype=object))
    assert features.shape == (2, 256) and features[0, ord("a")] == pytest.approx(2 / 3) and not features[1].any()


@pytest.mark.parametrize("modality, values", [
    ("series", [np.linspace(0, 1, 8, dtype=np.float32).reshape(4, 2) * i for i in range(6)]),
    ("text", [f"sample number {i}" for i in range(6)]),
])
def test_values_round_trip_through_the_writer_and_the_reader(tmp_path, modality, values):
    source = Source("toy", ["a", "b"], len(values), lambda i: (values[i], i % 2), modality)
    manifest = write_shards(source, str(tmp_path), "train", WriteOptions(samples_per_shard=4, shuffle_seed=None),
                            progress=lambda _: None)
    kind = get_modality(modality)
    assert (manifest.modality, manifest.extensions) == (modality, sorted([kind.formats[0], "cls"]))
    assert manifest.image_format is None
    shards = open_shards(str(tmp_path), modality=modality)
    report = inspect_shards(shards)  # decodes through the manifest's modality
    assert report.samples == len(values) and report.ok
    with pytest.raises(ValueError, match=f"format 'png' cannot hold {modality} samples"):
        write_shards(source, str(tmp_path / "png"), "train", WriteOptions(format="png"), progress=lambda _: None)


def test_shards_of_another_modality_are_refused_naming_the_manifest_and_field(tmp_path):
    values = ["x", "y"]
    write_shards(Source("toy", ["a"], 2, lambda i: (values[i], 0), "text"), str(tmp_path), "train", WriteOptions(),
                 progress=lambda _: None)
    manifest = os.path.join(str(tmp_path), "manifest.json")
    with pytest.raises(ShardSpecError, match=rf"{manifest}: field 'modality' is 'text', but 'image' samples"):
        open_shards(str(tmp_path), modality="image")
    with pytest.raises(ShardSpecError, match="field 'modality'"):
        check_modality([manifest], "series")
    check_modality(str(tmp_path), "text")
    assert open_shards(str(tmp_path)).num_samples == 2  # no modality asked: any is read
