"""The recurrent sentence classifier of EDA's experiments as a text encoder, ``text-rnn``: token
embeddings, a bidirectional LSTM of 128 units per direction over the text, dropout 0.5, a second
bidirectional LSTM of 32 whose final states (both directions) summarise the text, dropout 0.5, and
a 20-unit ReLU layer (Wei and Zou 2019's RNN, ``build_model`` in ``code/methods.py`` of
jasonwei20/eda_nlp: Bidirectional(LSTM(128)) -> Dropout(0.5) -> Bidirectional(LSTM(32)) ->
Dropout(0.5) -> Dense(20, relu) -> softmax; the classifier's linear head is the last layer). EDA
measured +3.0 points on average at 500 training sentences over this model and a CNN.

Texts are packed by their lengths, so padding never enters a state and a text's features do not
depend on its batch. The embeddings start random (N(0, 1), PyTorch's default) over a tokenizer
folder's vocabulary, or from pretrained word vectors (``word_vectors="minilm"``,
``word_vectors.py``); EDA's reference code feeds fixed word2vec vectors, here they train with the
rest. The LSTMs keep PyTorch's initialisation (Keras's is Glorot and orthogonal with a forget-gate
bias of 1).

    enc = create_model("text-rnn", tokenizer="data/rotten-tomatoes/tokenizer")
    feats = enc.forward_features(byte_ids)            # [B, 20]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from augtrain.models.registry import register_model
from augtrain.models.text import TokenizedEncoder, load_tokenizer
from augtrain.models.word_vectors import load_word_vectors, vocabulary


class TextRNN(TokenizedEncoder):
    """``forward_features(byte_ids) -> [B, dense]``."""

    def __init__(self, tokenizer: Any, tokenizer_dir: str, *, embed_dim: int = 300, hidden: tuple[int, int] = (128, 32),
                 dense: int = 20, dropout: float = 0.5, max_length: int = 128) -> None:
        super().__init__(tokenizer, tokenizer_dir, max_length)
        self.pad_id = int(tokenizer.pad_token_id)
        self.embed = nn.Embedding(len(tokenizer), embed_dim, padding_idx=self.pad_id)
        self.lstm1 = nn.LSTM(embed_dim, hidden[0], batch_first=True, bidirectional=True)
        self.lstm2 = nn.LSTM(2 * hidden[0], hidden[1], batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(2 * hidden[1], dense)
        self.num_features = dense

    def forward_features(self, byte_ids: torch.Tensor) -> torch.Tensor:
        ids, mask = self.tokenize(byte_ids)
        lengths = mask.sum(1).clamp_min(1).cpu()
        # outside autocast: the recurrences run in the weights' own dtype (fp32 in a fine-tune,
        # bf16 only where the whole model was cast, as DeepSpeed's bf16 pretraining does)
        with torch.autocast(byte_ids.device.type, enabled=False):
            x = self.embed(ids).to(self.lstm1.weight_ih_l0.dtype)
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            states, _ = self.lstm1(packed)
            states = states._replace(data=self.dropout(states.data))  # dropout on the sequence's outputs
            _, (h, _) = self.lstm2(states)  # h: [2, B, hidden], the final state of each direction
            summary = self.dropout(torch.cat([h[0], h[1]], 1))
            return torch.relu(self.dense(summary))


@register_model("text-rnn", modalities=("text",))
def text_rnn(tokenizer: str = "", embed_dim: int = 300, hidden: tuple[int, int] | list[int] = (128, 32), dense: int = 20,
             dropout: float = 0.5, max_length: int = 128, word_vectors: str = "") -> TextRNN:
    if len(hidden) != 2:
        raise ValueError(f"text-rnn: encoder_kwargs.hidden is {list(hidden)}; it takes the two LSTMs' widths")
    folder, vectors = vocabulary("text-rnn", tokenizer, word_vectors)
    if vectors is not None:
        embed_dim = int(vectors.shape[1])
    encoder = TextRNN(load_tokenizer(folder), folder, embed_dim=embed_dim, hidden=(int(hidden[0]), int(hidden[1])),
                      dense=dense, dropout=dropout, max_length=max_length)
    if vectors is not None:
        load_word_vectors(encoder.embed, vectors, "text-rnn", word_vectors)
    encoder.spec_kwargs = {"tokenizer": "" if word_vectors else folder, "embed_dim": embed_dim,
                           "hidden": [int(h) for h in hidden], "dense": dense, "dropout": dropout,
                           "max_length": max_length, "word_vectors": word_vectors}
    return encoder
