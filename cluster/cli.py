"""The ``augtrain`` command. Each subcommand lives in ``augtrain.cluster.commands.<name>``
and adds itself with ``register(subparsers)``; heavy imports happen inside the handlers so
that ``--help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import signal
import sys
import traceback

COMMAND_MODULES = (
    "augtrain.cluster.commands.shards",
    "augtrain.cluster.commands.tokenizer",
    "augtrain.cluster.commands.data",
    "augtrain.cluster.commands.quickstart",
    "augtrain.cluster.commands.pretrain",
    "augtrain.cluster.commands.packaged",
    "augtrain.cluster.commands.augment",
    "augtrain.cluster.commands.submit",
    "augtrain.cluster.commands.jobs",
    "augtrain.cluster.commands.k8s",
    "augtrain.cluster.commands.finetune",
    "augtrain.cluster.commands.distill",
    "augtrain.cluster.commands.ensemble",
    "augtrain.cluster.commands.generate",
    "augtrain.cluster.commands.search",
    "augtrain.cluster.commands.report",
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
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print Ray's, Tune's and DeepSpeed's own logs and workers' output here, and "
                             "tracebacks of errors (by default they go to the run folder's logs/)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


# what continues an interrupted command: its checkpoints and finished stages are kept
RESUME_FLAGS = {"pretrain": ("--resume", "latest"), "search": ("--resume",), "quickstart": ()}


def resume_hint(command: str, argv: list[str] | None) -> str:
    """How to continue ``command`` after Ctrl-C (the same command line, resuming)."""
    words = list(sys.argv[1:] if argv is None else argv)
    if command not in RESUME_FLAGS:
        return "its finished results are kept; run it again to start over"
    flags = RESUME_FLAGS[command]
    if flags and flags[0] not in words:
        words += list(flags)
    return "the last complete checkpoint is kept; continue with: augtrain " + " ".join(
        shlex.quote(w) for w in words)


_RUNNING: list[str] = []  # the commands running in this process, outermost first


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from augtrain.pipelines import console

    outer = not console.is_configured()  # the quickstart runs `search` through main() again
    nested = bool(_RUNNING)  # a command run by another one in this process
    console.configure(verbose=args.verbose or console.verbose())
    calling = console.command()  # the command running this one, restored after
    console.set_command(["augtrain", *(sys.argv[1:] if argv is None else argv)])
    if not nested:
        console.set_closing(None)  # a closing line of an earlier command in this process is not this one's
    _RUNNING.append(args.command)
    closing = None  # the last line: how to resume an interrupted command
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if not outer:
            raise  # the command the user ran says how to resume
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # a second Ctrl-C: out at once
        closing = f"augtrain {args.command}: interrupted; {resume_hint(args.command, argv)}"
        return 130
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError) as exc:
        if args.verbose or os.environ.get("AUGTRAIN_DEBUG"):
            traceback.print_exc()
        print(f"augtrain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        _RUNNING.pop()
        if nested:
            console.set_command(calling)
        sys.stdout.flush()  # what the command printed comes before the closing lines on stderr
        kept = console.keep_ray_logs() if outer else None
        if kept is not None and not args.verbose:
            print(f"logs: {console.log_file()} and Ray's in {kept}", file=sys.stderr)
        if closing is not None:
            print(closing, file=sys.stderr)
        elif not nested and console.closing() is not None:
            print(console.closing(), file=sys.stderr)
        if not nested:
            console.close_run_dir()


if __name__ == "__main__":
    sys.exit(main())
