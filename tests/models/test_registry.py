"""Every registered encoder builds, embeds, trains and rebuilds from its spec."""

from __future__ import annotations

import pytest
import torch

from augtrain.models import build_from_spec, create_model, list_models, model_modalities, objective_modalities
from augtrain.models.registry import MODELS

# name -> (kwargs, input shape, parameter-count range)
MODEL_CASES: dict[str, tuple[dict, tuple[int, ...], tuple[float, float]]] = {
    "cnn-tiny": ({"in_chans": 1}, (2, 1, 28, 28), (2e4, 3e4)),
    "cnn-small": ({"in_chans": 1}, (2, 1, 28, 28), (1.1e6, 1.2e6)),
    "resnet-tiny": ({"in_chans": 1}, (2, 1, 28, 28), (1.5e4, 2.5e4)),
    "resnet18": ({"small_input": True}, (2, 3, 32, 32), (11.0e6, 11.3e6)),
    "vit-micro": ({"in_chans": 1, "image_size": 28, "patch_size": 7}, (2, 1, 28, 28), (5e4, 1e5)),
    "vit-tiny": ({}, (1, 3, 224, 224), (5.4e6, 5.8e6)),
    "vit-small": ({}, (1, 3, 224, 224), (21e6, 22.2e6)),
    "vit-base": ({}, (1, 3, 224, 224), (85e6, 86.5e6)),
    "efficientnet-lite0": ({}, (2, 3, 64, 64), (3.3e6, 3.5e6)),
}
# series encoders: [B, C, T] inputs (Wang et al. 2017's FCN and ResNet sizes; PatchTST's)
SERIES_MODEL_CASES: dict[str, tuple[dict, tuple[int, ...], tuple[float, float]]] = {
    "fcn": ({"in_chans": 1}, (2, 1, 150), (2.6e5, 2.7e5)),
    "resnet1d": ({"in_chans": 3}, (2, 3, 77), (5.0e5, 5.4e5)),
    "patchtst": ({"in_chans": 1}, (2, 1, 150), (3.5e5, 4.5e5)),
    "patchtst-tiny": ({"in_chans": 2, "context_length": 64}, (2, 2, 300), (5e4, 8e4)),
}


# text encoders: name -> (kwargs beside the tokenizer, parameter-count range with a 600-token vocabulary)
TEXT_MODEL_CASES: dict[str, tuple[dict, tuple[float, float]]] = {
    "bert-tiny": ({"tokenizer": True}, (4.5e5, 5.5e5)),
    "bert-mini": ({"tokenizer": True}, (3.2e6, 3.5e6)),
    "bert-small": ({"tokenizer": True}, (12.5e6, 13.5e6)),
    "minilm-l6": ({"pretrained": False}, (22.4e6, 22.7e6)),  # its own 30,522-token vocabulary
    "text-cnn": ({"tokenizer": True}, (5.3e5, 5.5e5)),  # 600 x 300 embeddings, 100 maps of widths 3, 4, 5
    "text-rnn": ({"tokenizer": True}, (6.9e5, 7.0e5)),  # 600 x 300 embeddings, BiLSTMs of 128 and 32, dense 20
}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> str:
    from augtrain.pipelines.data.text_sources import rotten_tomatoes
    from augtrain.pipelines.data.tokenizer import train_wordpiece

    texts = [t for t, _ in rotten_tomatoes("train")][:1500]
    return str(train_wordpiece(texts, tmp_path_factory.mktemp("tok"), vocab_size=600))


def test_every_registered_model_has_a_case():
    # the package's own models (plug-ins registered by other tests, such as the toy modality's, are not)
    shipped = {name for name in list_models() if MODELS.get(name).__module__.startswith("augtrain.")}
    assert shipped == set(MODEL_CASES) | set(TEXT_MODEL_CASES) | set(SERIES_MODEL_CASES)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(TEXT_MODEL_CASES))
def test_text_model_embeds_backpropagates_and_rebuilds(name: str, tokenizer: str):
    import numpy as np

    from augtrain.pipelines.modalities import get_modality

    kwargs, (low, high) = TEXT_MODEL_CASES[name]
    kwargs = {k: tokenizer if v is True else v for k, v in kwargs.items()}
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    assert low <= sum(p.numel() for p in model.parameters()) <= high
    ids = get_modality("text").to_tensor(np.array(["a fine film .", "dull"], dtype=object), (0.0,), (1.0,))
    features = model.forward_features(ids)
    assert features.shape == (2, model.num_features) and torch.isfinite(features).all()
    features.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    rebuilt = build_from_spec(model.spec)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert rebuilt.spec == model.spec and model_modalities(name) == ("text",)


@pytest.mark.parametrize("name", ["text-cnn", "text-rnn"])
def test_text_features_do_not_depend_on_the_batchs_padding(name: str, tokenizer: str):
    import numpy as np

    from augtrain.pipelines.modalities import get_modality

    torch.manual_seed(0)
    model = create_model(name, tokenizer=tokenizer).eval()
    to_ids = get_modality("text").to_tensor
    short, long = "dull", "a fine film , warm and funny , with a cast that makes every scene count ."
    alone = model.forward_features(to_ids(np.array([short], dtype=object), (0.0,), (1.0,)))
    beside = model.forward_features(to_ids(np.array([short, long], dtype=object), (0.0,), (1.0,)))
    torch.testing.assert_close(alone[0], beside[0])
    assert not torch.allclose(beside[0], beside[1])


def test_text_rnn_runs_under_bf16_autocast_cast_to_bf16_and_on_an_empty_text(tokenizer: str):
    import numpy as np

    from augtrain.pipelines.modalities import get_modality

    torch.manual_seed(0)
    model = create_model("text-rnn", tokenizer=tokenizer).eval()
    ids = get_modality("text").to_tensor(np.array(["a fine film .", ""], dtype=object), (0.0,), (1.0,))
    plain = model.forward_features(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = model.forward_features(ids)
    torch.testing.assert_close(autocast, plain)  # the LSTMs run outside autocast, in fp32
    cast = model.to(torch.bfloat16).forward_features(ids)  # DeepSpeed's bf16 casts the weights
    assert cast.dtype == torch.bfloat16 and torch.isfinite(cast.float()).all()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(MODEL_CASES) + sorted(SERIES_MODEL_CASES))
def test_model_embeds_and_backpropagates(name: str):
    kwargs, shape, (low, high) = {**MODEL_CASES, **SERIES_MODEL_CASES}[name]
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    n_params = sum(p.numel() for p in model.parameters())
    assert low <= n_params <= high, f"{name}: {n_params} parameters"

    features = model.forward_features(torch.randn(shape))
    assert features.shape == (shape[0], model.num_features)
    assert torch.isfinite(features).all()

    features.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(MODEL_CASES) + sorted(SERIES_MODEL_CASES))
def test_spec_rebuilds_the_same_architecture(name: str):
    kwargs = {**MODEL_CASES, **SERIES_MODEL_CASES}[name][0]
    model = create_model(name, **kwargs)
    rebuilt = build_from_spec(model.spec)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    assert rebuilt.spec == model.spec


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(KeyError, match="cnn-tiny"):
        create_model("no-such-model")


def test_models_say_which_modalities_they_fit():
    assert all(model_modalities(name) == ("image",) for name in MODEL_CASES)
    assert all(model_modalities(name) == ("series",) for name in SERIES_MODEL_CASES)
    assert objective_modalities("masked-series") == ("series",)
    assert objective_modalities("simclr") is None  # any encoder's views
    assert objective_modalities("mae") == ("image",)
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        model_modalities("nope")


@pytest.mark.parametrize("name", ["text-cnn", "text-rnn"])
def test_word_vectors_start_from_minilms_embeddings_with_its_vocabulary(name: str, tokenizer: str):
    from safetensors.torch import load_file

    from augtrain.models.text import minilm_dir

    model = create_model(name, word_vectors="minilm")
    expected = load_file(str(minilm_dir() / "model.safetensors"))["embeddings.word_embeddings.weight"]
    torch.testing.assert_close(model.embed.weight.detach(), expected.float())
    assert model.embed.embedding_dim == 384 and len(model.tokenizer) == 30522
    film = model.tokenizer.convert_tokens_to_ids("film")
    assert film != model.tokenizer.unk_token_id  # a known word has its own vector
    rebuilt = build_from_spec(model.spec)
    assert rebuilt.spec == model.spec and rebuilt.embed.weight.shape == model.embed.weight.shape
    with pytest.raises(ValueError, match=f"{name}: word_vectors brings its own tokenizer"):
        create_model(name, word_vectors="minilm", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="word_vectors is 'glove'"):
        create_model(name, word_vectors="glove")
