"""The ``augtrain`` command. Each subcommand lives in ``augtrain.cluster.commands.<name>``
and adds itself with ``register(subparsers)``; heavy imports happen inside the handlers so
that ``--help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

COMMAND_MODULES = (
    "augtrain.cluster.commands.shards",
    "augtrain.cluster.commands.data",
    "augtrain.cluster.commands.quickstart",
    "augtrain.cluster.commands.pretrain",
    "augtrain.cluster.commands.augment",
    "augtrain.cluster.commands.submit",
    "augtrain.cluster.commands.jobs",
    "augtrain.cluster.commands.k8s",
    "augtrain.cluster.commands.finetune",
    "augtrain.cluster.commands.search",
)


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    parser = argparse.ArgumentParser(
        prog="augtrain",
        description="Augmentation-aware pretraining at cluster scale (Ray, DeepSpeed, DALI).",
    )
    parser.add_argument("--version", action="version", version=f"augtrain {version('augtrain')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("augtrain: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError) as exc:
        if os.environ.get("AUGTRAIN_DEBUG"):
            traceback.print_exc()
        print(f"augtrain {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
