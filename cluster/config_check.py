"""The checks an experiment file gets before it is sent anywhere (a Ray job, a RayJob).

Every file must parse to a YAML mapping. The commands that read experiment files (``pretrain``,
``finetune``, ``search``) check it with their own loaders, with the entrypoint's ``--set``
overrides, so a typo fails on the submitting machine in seconds, not on the cluster later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

Validator = Callable[[Path, list[str]], None]


def check_yaml_mapping(path: Path) -> None:
    """The file parses to a YAML mapping (what every experiment file is)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an experiment config must be a YAML mapping")


def set_overrides(argv: Sequence[str]) -> list[str]:
    """The ``--set KEY=VALUE`` values of an argument list."""
    out, args = [], list(argv)
    for i, arg in enumerate(args):
        if arg == "--set" and i + 1 < len(args):
            out.append(args[i + 1])
        elif arg.startswith("--set="):
            out.append(arg.split("=", 1)[1])
    return out


def check_pretrain(path: Path, argv: list[str]) -> None:
    """``augtrain pretrain``'s own loader: unknown or ill-typed keys name key and file."""
    from augtrain.pipelines.train.config import load_config

    load_config(str(path), set_overrides(argv))


def check_finetune(path: Path, argv: list[str]) -> None:
    """``augtrain finetune``: the experiment and its ``finetune`` section."""
    from augtrain.pipelines.train.config import load_config
    from augtrain.pipelines.finetune import finetune_config_from_experiment

    finetune_config_from_experiment(load_config(str(path), set_overrides(argv)), str(path))


def check_search(path: Path, argv: list[str]) -> None:
    """``augtrain search``: the experiment, its ``finetune`` and its ``search`` sections."""
    from augtrain.pipelines.train.config import load_config
    from augtrain.pipelines.finetune import finetune_config_from_experiment
    from augtrain.tune.config import parse_search_config

    experiment = load_config(str(path), set_overrides(argv))
    cfg = finetune_config_from_experiment(experiment, str(path))
    search = parse_search_config(experiment.search, str(path))
    from augtrain.tune.search import check_searchable

    try:
        check_searchable(cfg, search)  # the space and baselines of the fine-tune's modality
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


CONFIG_VALIDATORS: dict[str, Validator] = {
    "pretrain": check_pretrain, "finetune": check_finetune, "search": check_search,
}


def check_config(command: str | None, path: Path, argv: Sequence[str] = ()) -> None:
    """Run every check that applies to ``path`` used by ``augtrain <command>``."""
    check_yaml_mapping(path)
    validator = CONFIG_VALIDATORS.get(command or "")
    if validator is not None:
        validator(path, list(argv))
