"""WordPiece tokenizers for text corpora: trained offline on a training split with the
``tokenizers`` library (BERT's uncased normalisation and pre-tokenisation, ``[PAD]`` id 0,
``[CLS] text [SEP]``), saved as a folder that transformers loads with
``BertTokenizerFast.from_pretrained(folder)`` (or ``AutoTokenizer``), beside the checkpoint.

    folder = train_wordpiece(texts, "runs/mlm/tokenizer", vocab_size=8000)
    tokenizer = load_tokenizer(folder)
    ids = encode_batch(tokenizer, ["a fine film"], max_length=128)   # int64 [B, L], 0 pads

Training is not bit-reproducible (the library breaks frequency ties in hash order, so two
trainings on one corpus can differ in the last tokens kept); the saved folder is the tokenizer of
record, and every later stage loads it rather than training again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0-4, in this order


def train_wordpiece(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 8000,
                    min_frequency: int = 2, max_length: int = 128) -> Path:
    """Train a WordPiece vocabulary on ``texts`` and save it (``tokenizer.json``, ``vocab.txt``,
    transformers' configs) in ``out_dir``; returns the folder."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    if vocab_size < len(SPECIAL_TOKENS) + 26:
        raise ValueError(f"tokenizer vocab_size {vocab_size} is too small (at least {len(SPECIAL_TOKENS) + 26})")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    texts = list(texts)
    if not texts:
        raise ValueError("train_wordpiece: no texts to train on")
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = BertTokenizerFast(tokenizer_object=tok, do_lower_case=True, model_max_length=max_length,
                             unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                             mask_token="[MASK]")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return out


def train_wordpiece_on_shards(specs: Sequence[str], out_dir: str | os.PathLike, **options) -> tuple[Path, int]:
    """``train_wordpiece`` on every text of the shard sets ``specs`` (shards of another modality
    are refused); returns the folder and the number of texts."""
    from augtrain.pipelines.data.decode import first_values

    texts = [t for spec in specs for t in first_values(spec, None, "text")]
    return train_wordpiece(texts, out_dir, **options), len(texts)


def absolute_tokenizer(encoder_kwargs: dict) -> dict:
    """``encoder_kwargs`` with a relative ``tokenizer`` folder made absolute (against the current
    directory, where the config was read): trials and Ray Train workers run in directories of
    their own, where a relative folder would name nothing."""
    folder = encoder_kwargs.get("tokenizer")
    if isinstance(folder, str) and folder and "://" not in folder and not os.path.isabs(folder):
        return {**encoder_kwargs, "tokenizer": os.path.abspath(folder)}
    return encoder_kwargs


def load_tokenizer(folder: str | os.PathLike):
    """A saved tokenizer folder -> transformers' fast tokenizer (local files only)."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file() and not (folder / "vocab.txt").is_file():
        raise FileNotFoundError(f"{folder}: no tokenizer.json or vocab.txt (not a tokenizer folder)")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def encode_batch(tokenizer, texts: Sequence[str], max_length: int = 128) -> np.ndarray:
    """Texts -> int64 ``[B, L]`` token ids with ``[CLS]``/``[SEP]``, padded with the pad id to the
    longest text of the batch (at most ``max_length``)."""
    out = tokenizer(list(texts), truncation=True, max_length=max_length, padding="longest",
                    return_attention_mask=False, return_tensors="np")
    return out["input_ids"].astype(np.int64)
