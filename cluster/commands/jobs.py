"""``augtrain jobs list|status|logs|stop``: jobs on a Ray cluster."""

from __future__ import annotations

import argparse
import sys
import time

from augtrain.cluster.commands.submit import add_address


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("jobs", help="list, inspect, follow and stop Ray jobs",
                            description="Jobs on a Ray cluster, through the Ray Jobs API.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="every job the cluster knows, newest first")
    add_address(listing)
    listing.set_defaults(func=_list)

    state = actions.add_parser("status", help="a job's status and message")
    add_address(state)
    state.add_argument("job_id")
    state.set_defaults(func=_status)

    logs = actions.add_parser("logs", help="a job's logs")
    add_address(logs)
    logs.add_argument("job_id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    logs.set_defaults(func=_logs)

    stop = actions.add_parser("stop", help="stop a running job and wait until it has stopped")
    add_address(stop)
    stop.add_argument("job_id")
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    stop.set_defaults(func=_stop)


def _client(args: argparse.Namespace):
    from augtrain.cluster import jobs

    jobs.enable_token_auth_from_env()
    return jobs.make_client(args.address)


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"


def _list(args: argparse.Namespace) -> int:
    from augtrain.cluster import jobs

    views = jobs.list_jobs(_client(args))
    if not views:
        print("no jobs")
        return 0
    width = max(len(v.job_id) for v in views)
    print(f"{'JOB ID':<{width}}  {'STATUS':<9}  {'STARTED':<19}  {'ENDED':<19}  ENTRYPOINT")
    for v in views:
        entry = v.entrypoint if len(v.entrypoint) <= 60 else v.entrypoint[:57] + "..."
        print(f"{v.job_id:<{width}}  {v.status:<9}  {_when(v.start_time):<19}  "
              f"{_when(v.end_time):<19}  {entry}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from augtrain.cluster import jobs

    state, message = jobs.status(_client(args), args.job_id)
    print(f"{args.job_id} {state}" + (f": {message}" if message else ""))
    return 0


def _logs(args: argparse.Namespace) -> int:
    from augtrain.cluster import jobs

    client = _client(args)
    if not args.follow:
        text = client.get_job_logs(args.job_id)
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        return 0
    for chunk in jobs.follow_logs(client, args.job_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    return 0


def _stop(args: argparse.Namespace) -> int:
    from augtrain.cluster import jobs

    state = jobs.stop(_client(args), args.job_id, wait_s=args.timeout)
    print(f"{args.job_id} {state}")
    return 0 if state in jobs.TERMINAL else 1
