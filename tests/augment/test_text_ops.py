"""The text ops (EDA's four and AEDA's punctuation), the standard text policies and WordNet read
offline from Debian's files through NLTK."""

from __future__ import annotations

import numpy as np
import pytest

from augtrain.augment import Policy, PolicyError, augment_rng, parse_policy, sample_plan
from augtrain.augment.policy import Op
from augtrain.augment.registry import catalogue, list_ops
from augtrain.augment.text import ops as text_ops
from augtrain.augment.text.ops import STOP_WORDS, split_word
from augtrain.augment.text.wordnet import LEXNAMES, lexnames_text, synonyms, wordnet_root
from augtrain.pipelines.modalities import get_modality

SENTENCE = "The film is a charming , funny and beautifully acted comedy about growing up ."
APPLY = {
    "synonym_replace": text_ops.synonym_replace,
    "random_insert": text_ops.random_insert,
    "random_swap": text_ops.random_swap,
    "random_delete": text_ops.random_delete,
    "punctuation": text_ops.punctuation,
}


def test_every_text_op_has_a_registered_entry_and_a_test_here():
    assert set(list_ops("text")) == set(APPLY), "a text op without a test entry here (or the reverse)"
    for name, op in catalogue("text").ops.items():
        assert op.apply is APPLY[name] and op.uses_magnitude


def test_wordnet_is_read_offline_with_a_generated_lexnames():
    root = wordnet_root()
    folder = root / "corpora" / "wordnet"
    assert (folder / "lexnames").read_text() == lexnames_text()
    assert len(LEXNAMES) == 45 and lexnames_text().splitlines()[3] == "03\tnoun.Tops\t1"
    assert "film" in synonyms("movie") and "flick" in synonyms("movie")
    assert "movie" not in synonyms("movie")
    assert synonyms("qwzxv") == () and synonyms("42") == ()


def _draw(name: str, text: str, magnitude: float = 4.0, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    params = catalogue("text").ops[name].sample(rng, magnitude, {}, 1, 1, None)
    return APPLY[name](text, params)


@pytest.mark.parametrize("name", sorted(APPLY))
def test_ops_are_reproducible_for_a_seed_and_change_the_text(name):
    outs = {_draw(name, SENTENCE, seed=s) for s in range(6)}
    assert _draw(name, SENTENCE, seed=3) == _draw(name, SENTENCE, seed=3)
    assert len(outs) > 1 and any(o != SENTENCE for o in outs)


def test_synonym_replace_changes_words_not_their_number_and_keeps_punctuation():
    out = text_ops.synonym_replace("A great movie!", {"alpha": 0.5, "seed": 1.0})
    assert out != "A great movie!"
    assert out.endswith("!") and out.startswith("A ")  # 'A' is a stop word; '!' stays on its word
    assert split_word("(great!") == ("(", "great", "!")


def test_random_insert_adds_synonyms_of_words_in_the_text():
    words = SENTENCE.split()
    out = text_ops.random_insert(SENTENCE, {"alpha": 0.1, "seed": 2.0}).split()
    assert len(out) == len(words) + max(1, int(0.1 * len(words)))  # EDA's count
    added = list(out)
    for w in words:
        added.remove(w)
    pool = {s for w in words for s in synonyms(w.lower())}
    assert added and all(a in pool for a in added)


def test_random_swap_and_delete_keep_the_words_they_should():
    swapped = text_ops.random_swap(SENTENCE, {"alpha": 0.2, "seed": 5.0})
    assert sorted(swapped.split()) == sorted(SENTENCE.split()) and swapped != SENTENCE
    deleted = text_ops.random_delete(SENTENCE, {"alpha": 0.3, "seed": 5.0}).split()
    assert 0 < len(deleted) < len(SENTENCE.split())
    assert all(w in SENTENCE.split() for w in deleted)
    assert len(text_ops.random_delete("a b c", {"alpha": 1.0, "seed": 0.0}).split()) == 1  # never empty


def test_punctuation_inserts_only_marks_and_at_most_a_third_of_the_words():
    words = SENTENCE.split()
    for seed in range(20):
        out = text_ops.punctuation(SENTENCE, {"level": 1.0, "seed": float(seed)}).split()
        extra = list(out)
        for w in words:
            extra.remove(w)
        assert 1 <= len(extra) <= max(1, round(len(words) / 3)) and set(extra) <= set(text_ops.PUNCTUATION)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", ["", "good", "the the the the", "film film film", "qwzxv plmoq", "a"])
def test_degenerate_texts_terminate_and_never_grow_empty(text):
    """No synonyms, repeated words, one word, no words: every op returns (no endless retry)."""
    for name in APPLY:
        for m in (0.0, 5.0, 10.0):
            out = _draw(name, text, magnitude=m)
            assert isinstance(out, str)
            if text.strip():
                assert out.strip(), f"{name} emptied {text!r}"
    assert text_ops.synonym_replace("qwzxv plmoq", {"alpha": 1.0, "seed": 0.0}) == "qwzxv plmoq"
    assert text_ops.random_swap("good", {"alpha": 1.0, "seed": 0.0}) == "good"


def test_stop_words_are_never_replaced():
    out = text_ops.synonym_replace("the and of with", {"alpha": 1.0, "seed": 0.0})
    assert out == "the and of with" and {"the", "and"} <= STOP_WORDS


def test_standard_text_policies_round_trip_with_their_copies():
    assert parse_policy("eda", "text").copies == 4
    paper_500 = parse_policy("eda-m1-c16", "text")
    assert (paper_500.copies, paper_500.choices[0][0].magnitude, paper_500.modality) == (16, 1.0, "text")
    for spec in ("none", "eda", "eda-m1-c8", "aeda", "text-trivialaugment"):
        policy = parse_policy(spec, "text")
        assert parse_policy(policy.to_string()) == policy
        assert Policy.from_dict(policy.to_dict()) == policy
    custom = Policy(choices=((Op("random_swap", magnitude=2.0),),), copies=3, modality="text")
    assert "copies=3" in custom.to_string() and parse_policy(custom.to_string()) == custom
    assert Policy.from_json(custom.to_json()) == custom
    assert "copies" not in parse_policy("simclr").to_dict()  # image JSON unchanged
    with pytest.raises(PolicyError, match="copies"):
        Policy(copies=-1, modality="text")
    with pytest.raises(PolicyError, match="copies"):
        Policy.from_dict({"modality": "text", "copies": "4"})
    with pytest.raises(PolicyError, match="unknown op 'rotate' for modality 'text'"):
        parse_policy("pre=rotate:3", "text")


def test_the_text_modality_applies_a_policy_per_sample_reproducibly():
    modality = get_modality("text")
    transform = modality.sample_transform(parse_policy("eda-m2-c4", "text"), size=None, views=2)
    a = transform(SENTENCE, augment_rng(0, 1))
    b = transform(SENTENCE, augment_rng(0, 1))
    assert a == b and set(a) == {"view0", "view1"} and all(isinstance(v, str) for v in a.values())
    plan = sample_plan(parse_policy("eda", "text"), np.random.default_rng(0), 1, 1, None)
    assert len(plan) == 1 and plan[0].name in APPLY and set(plan[0].params) == {"alpha", "seed"}


def test_augment_preview_prints_texts_beside_their_copies(tmp_path, capsys):
    from augtrain.cluster.cli import main
    from augtrain.pipelines.data.sources import open_source
    from augtrain.pipelines.data.writer import WriteOptions, write_shards

    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "A charming and funny film about growing up."}\n{"text": "Dull."}\n', encoding="utf-8")
    write_shards(open_source(f"text:{path}", "train"), str(tmp_path / "shards"), "train", WriteOptions(),
                 progress=lambda _: None)
    out = tmp_path / "preview.txt"
    assert main(["augment", "preview", "--policy", "eda-m4-c2", "--shards", str(tmp_path / "shards"), "--n", "2",
                 "--per-sample", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(2 copies of each text beside it in training)" in printed and printed.count("copy ") == 6
    assert "original : A charming and funny film about growing up." in printed
    assert out.read_text().strip() in printed
    assert main(["augment", "preview", "--policy", "rand-n2-m9", "--shards", str(tmp_path / "shards")]) == 2
    assert "unknown policy 'rand-n2-m9' for modality 'text'" in capsys.readouterr().err
