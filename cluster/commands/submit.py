"""``augtrain submit [--address URL] [--wait] -- ENTRYPOINT...``: a job through the Ray Jobs API."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "submit", help="submit a job to a Ray cluster (Ray Jobs API)",
        description="Submit ENTRYPOINT as a Ray job. The project is shipped as the job's working "
                    "dir (data/, outputs/, .venv/ left out); every -c/--config file is validated "
                    "first and must lie inside the working dir. Token auth: set RAY_AUTH_MODE=token "
                    "and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH).",
        epilog="example: augtrain submit --address http://HEAD:8265 --wait -- "
               "augtrain pretrain -c configs/quickstart-simclr.yaml")
    add_address(parser)
    parser.add_argument("--wait", action="store_true",
                        help="follow the job's logs until it ends; exit non-zero unless it succeeds")
    parser.add_argument("--working-dir", default=None,
                        help="directory shipped as the job's working dir (default: the augtrain "
                             "source checkout when running from one, else the current directory)")
    parser.add_argument("--job-id", default=None, help="submission id (default: generated)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment variable for the job (repeatable)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="with --wait: give up waiting after this many seconds")
    parser.add_argument("entrypoint", nargs=argparse.REMAINDER,
                        help="the command to run, after `--`")
    parser.set_defaults(func=_submit)


def add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="Ray dashboard URL, e.g. http://HEAD:8265 (default: "
                             "RAY_API_SERVER_ADDRESS, an http RAY_ADDRESS, or http://127.0.0.1:8265)")


def parse_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env {pair!r}: expected KEY=VALUE")
        env[key] = value
    return env


def _submit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from augtrain.cluster import jobs

    argv = list(args.entrypoint)
    if argv and argv[0] == "--":
        argv = argv[1:]
    working_dir = Path(args.working_dir).resolve() if args.working_dir else jobs.project_root()
    entrypoint = jobs.prepare_entrypoint(argv, working_dir)
    runtime_env = jobs.build_runtime_env(working_dir, parse_env(args.env))
    jobs.enable_token_auth_from_env()
    client = jobs.make_client(args.address)
    job_id = jobs.submit(client, entrypoint, runtime_env, job_id=args.job_id)
    print(f"submitted job {job_id} to {client.get_address()}", flush=True)
    if not args.wait:
        print(f"  follow:  augtrain jobs logs {job_id} --follow\n"
              f"  status:  augtrain jobs status {job_id}\n"
              f"  stop:    augtrain jobs stop {job_id}")
        return 0
    for chunk in jobs.follow_logs(client, job_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    state = jobs.wait(client, job_id, timeout_s=args.timeout)
    print(f"job {job_id} {state}")
    return 0
