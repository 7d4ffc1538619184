"""``augtrain k8s render|validate``: KubeRay manifests for an experiment, checked offline."""

from __future__ import annotations

import argparse
import sys


from augtrain.cluster.k8s.render import RenderOptions

_DEFAULTS = RenderOptions()
_OPTION_FLAGS = (
    ("--worker-cpus", "worker_cpus", int, "CPUs of a CPU worker pod"),
    ("--worker-memory", "worker_memory", str, "memory of a CPU worker pod"),
    ("--gpu-worker-cpus", "gpu_worker_cpus", int, "CPUs of a GPU worker pod (one GPU each)"),
    ("--gpu-worker-memory", "gpu_worker_memory", str, "memory of a GPU worker pod"),
    ("--spare-cpu-workers", "spare_cpu_workers", int, "CPU pods beyond training, for Ray Data"),
    ("--idle-timeout", "idle_timeout_s", int, "seconds before an idle CPU worker is removed"),
    ("--gpu-idle-timeout", "gpu_idle_timeout_s", int, "seconds before an idle GPU worker is removed"),
    ("--storage-claim", "storage_claim", str, "ReadWriteMany PVC for checkpoints and results"),
    ("--auth-secret", "auth_secret", str, "Secret holding the Ray token (key auth_token)"),
    ("--deadline", "active_deadline_s", int, "activeDeadlineSeconds of the whole run"),
    ("--ttl", "ttl_after_finished_s", int, "seconds the finished cluster is kept for its logs"),
    ("--backoff-limit", "backoff_limit", int, "retries, each on a fresh cluster"),
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("k8s", help="render and validate KubeRay manifests",
                            description="KubeRay (ray.io/v1) manifests: render a RayJob for an "
                                        "experiment, validate manifests offline.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    render = actions.add_parser(
        "render", help="write a RayJob (and its config ConfigMap) for an experiment",
        description="Render a ConfigMap holding CONFIG and a RayJob that runs it on its own "
                    "autoscaling Ray cluster. Reads the config's `name` and `cluster:` keys.",
        epilog="example: augtrain k8s render -c configs/x.yaml --overlay gpu | kubectl apply -f -")
    render.add_argument("-c", "--config", required=True, help="experiment YAML file")
    render.add_argument("--overlay", choices=["cpu", "gpu"], default="cpu",
                        help="cpu: CPU workers only; gpu: GPU and CPU workers (default cpu)")
    render.add_argument("--job", choices=["pretrain", "search"], default="pretrain",
                        help="what the RayJob runs (default pretrain)")
    render.add_argument("--checkpoint", default=None,
                        help="for --job search: the pretraining checkpoint on the shared volume "
                             "(default: the newest of this experiment's pretraining run)")
    render.add_argument("-o", "--output", default=None, help="write here instead of stdout")
    sizes = render.add_argument_group("cluster shape (Kubernetes only; defaults in brackets)")
    for flag, field, kind, text in _OPTION_FLAGS:
        sizes.add_argument(flag, dest=field, type=kind, default=None,
                           help=f"{text} [{getattr(_DEFAULTS, field)}]")
    render.set_defaults(func=_render)

    validate = actions.add_parser(
        "validate", help="check manifests against KubeRay CRDs, Kubernetes schemas and rules",
        description="Validate manifest files, directories and kustomizations (built with kubectl "
                    "kustomize) against the KubeRay CRD schemas, core Kubernetes schemas and the "
                    "rules the KubeRay controller enforces. Exit status 1 when anything fails.")
    validate.add_argument("paths", nargs="+", metavar="PATH")
    validate.add_argument("--kubernetes-version", default=None,
                          help="Kubernetes version of the core schemas (default 1.32)")
    validate.set_defaults(func=_validate)


def _render(args: argparse.Namespace) -> int:
    from augtrain.cluster.k8s.render import render_file, to_yaml
    from augtrain.cluster.k8s.validate import validate_objects

    from pathlib import Path

    from augtrain.cluster.config_check import check_config
    from augtrain.cluster.k8s.render import RenderOptions

    given = {field: getattr(args, field) for _, field, _, _ in _OPTION_FLAGS
             if getattr(args, field) is not None}
    options = RenderOptions(**given)
    objects = render_file(args.config, overlay=args.overlay, job=args.job,
                          checkpoint=args.checkpoint, options=options)
    # the experiment itself, as the job will check it on the cluster
    check_config(args.job, Path(args.config), objects[1]["spec"]["entrypoint"].split())
    problems = validate_objects(objects, f"render of {args.config}")
    if problems:  # a rendering bug, never the user's: refuse to write a broken manifest
        raise RuntimeError("rendered manifest does not validate:\n"
                           + "\n".join(str(p) for p in problems))
    text = to_yaml(objects)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        print(f"wrote {args.output} ({', '.join(o['kind'] + '/' + o['metadata']['name'] for o in objects)})",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from augtrain.cluster.k8s.schema import DEFAULT_KUBERNETES_VERSION
    from augtrain.cluster.k8s.validate import validate_paths

    count, problems = validate_paths(args.paths, args.kubernetes_version or DEFAULT_KUBERNETES_VERSION)
    for p in problems:
        print(p)
    print(f"{count} objects checked, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0
