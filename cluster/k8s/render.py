"""``augtrain k8s render``: a RayJob (plus the ConfigMap holding the experiment file) for one
experiment, on its own autoscaling KubeRay cluster.

From the experiment file only ``name`` and four keys of its ``cluster:`` section are read
(``workers``, ``cpus_per_worker``, ``use_gpu``, ``image``: the Ray Train workers the run asks
for); the whole file travels unread in the ConfigMap and ``augtrain pretrain`` validates it. What
only Kubernetes needs (pod sizes, idle timeouts, deadlines, the shared volume) are options of
the command (``RenderOptions``). Rendering is pure: dicts in, dicts out.

Sizing: each worker group starts at 0 pods. On ``cpu`` the CPU group may grow to what the
training workers need (``workers * cpus_per_worker`` CPUs in pods of ``worker_cpus``) plus
``spare_cpu_workers`` pods for Ray Data, whose read tasks each need a whole CPU. On ``gpu`` the
GPU group may grow to one pod (one GPU) per training worker, and the CPU group to
``spare_cpu_workers`` pods for Ray Data.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augtrain.cluster.k8s.rules import DNS1035, MAX_RAYJOB_NAME

OVERLAYS = ("cpu", "gpu")
JOBS = ("pretrain", "search")
RAY_VERSION = "2.60.0"
IMAGE = "augtrain"
IMAGE_TAG = "0.1.0"
CONFIG_MOUNT = "/etc/augtrain"
CONFIG_KEY = "config.yaml"
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


@dataclass(frozen=True)
class Experiment:
    """What rendering reads from an experiment file."""

    name: str
    workers: int = 2
    cpus_per_worker: float = 1.0
    use_gpu: bool | str = "auto"
    image: str | None = None


@dataclass(frozen=True)
class RenderOptions:
    """Kubernetes-only settings (command options, not experiment keys)."""

    head_cpus: int = 2
    head_memory: str = "8Gi"
    worker_cpus: int = 8
    worker_memory: str = "32Gi"
    gpu_worker_cpus: int = 8
    gpu_worker_memory: str = "64Gi"
    spare_cpu_workers: int = 1
    idle_timeout_s: int = 120
    gpu_idle_timeout_s: int = 300
    storage_claim: str = "augtrain-checkpoints"
    storage_mount: str = "/mnt/augtrain"
    auth_secret: str = "augtrain-ray-token"
    active_deadline_s: int = 172800
    ttl_after_finished_s: int = 600
    backoff_limit: int = 1


@dataclass(frozen=True)
class Group:
    """One node group: pod resources and, for workers, the autoscaling range."""

    cpus: int
    memory: str
    gpus: int = 0
    max: int = 0
    idle_timeout_s: int = 0


def _get(section: dict, key: str, kinds: tuple, default: Any, source: str) -> Any:
    value = section.get(key, default)
    if value is default:
        return value
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ValueError(f"{source}: cluster.{key} must be {names}, got {value!r}")
    return value


def _max_workers(workers: int | list, source: str) -> int:
    """Pods are sized for the most workers a run may have: an elastic run's [MIN, MAX] is MAX."""
    if isinstance(workers, list):
        if len(workers) != 2 or not all(isinstance(w, int) for w in workers) or not 1 <= workers[0] <= workers[1]:
            raise ValueError(f"{source}: cluster.workers [MIN, MAX] needs two whole numbers, 1 <= MIN <= MAX; "
                             f"got {workers}")
        return workers[1]
    return workers


def experiment_from_config(data: Any, source: str) -> Experiment:
    """The keys rendering needs, type-checked; every other key is left to the experiment."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: an experiment file must be a YAML mapping")
    if "name" not in data:
        raise ValueError(f"{source}: missing key name (the experiment name names the RayJob)")
    cluster = data.get("cluster") or {}
    if not isinstance(cluster, dict):
        raise ValueError(f"{source}: cluster must be a mapping")
    d = Experiment(name="x")
    exp = Experiment(
        name=job_name(data["name"], source),
        workers=_max_workers(_get(cluster, "workers", (int, list), d.workers, source), source),
        cpus_per_worker=float(_get(cluster, "cpus_per_worker", (int, float), d.cpus_per_worker, source)),
        use_gpu=_get(cluster, "use_gpu", (bool, str), d.use_gpu, source),
        image=_get(cluster, "image", (str,), d.image, source),
    )
    if exp.workers < 1 or exp.cpus_per_worker <= 0:
        raise ValueError(f"{source}: cluster.workers must be >= 1 and cluster.cpus_per_worker > 0")
    if exp.use_gpu not in ("auto", True, False):
        raise ValueError(f"{source}: cluster.use_gpu must be auto, true or false")
    return exp


def job_name(raw: Any, source: str) -> str:
    """The experiment name as a RayJob name: lower case, ``_``/``.``/spaces to ``-``."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{source}: name must be a non-empty string")
    name = re.sub(r"[_.\s]+", "-", raw.strip().lower())
    if not DNS1035.match(name):
        raise ValueError(f"{source}: name {raw!r} -> {name!r} is not a DNS-1035 label (letters, "
                         "digits and '-', starting with a letter)")
    if len(name) > MAX_RAYJOB_NAME:
        raise ValueError(f"{source}: name {name!r} has {len(name)} characters; a RayJob name has "
                         f"at most {MAX_RAYJOB_NAME}")
    return name


def worker_groups(exp: Experiment, overlay: str, o: RenderOptions, source: str = "config") -> dict[str, Group]:
    """The worker groups an experiment needs on an overlay (see the module docstring)."""
    if overlay not in OVERLAYS:
        raise ValueError(f"overlay {overlay!r}: expected one of {', '.join(OVERLAYS)}")
    if exp.use_gpu is True and overlay == "cpu":
        raise ValueError(f"{source}: cluster.use_gpu is true; render it with --overlay gpu")
    if exp.use_gpu is False and overlay == "gpu":
        raise ValueError(f"{source}: cluster.use_gpu is false; --overlay gpu would start GPU "
                         "nodes the run never uses (use --overlay cpu)")
    if exp.cpus_per_worker > (o.worker_cpus if overlay == "cpu" else o.gpu_worker_cpus):
        raise ValueError(f"{source}: cluster.cpus_per_worker ({exp.cpus_per_worker:g}) does not fit "
                         f"in a worker pod of {o.worker_cpus} CPUs (raise --worker-cpus)")
    if overlay == "cpu":
        train_pods = math.ceil(exp.workers * exp.cpus_per_worker / o.worker_cpus)
        return {"cpu": Group(o.worker_cpus, o.worker_memory, max=train_pods + o.spare_cpu_workers,
                             idle_timeout_s=o.idle_timeout_s)}
    return {"cpu": Group(o.worker_cpus, o.worker_memory, max=max(1, o.spare_cpu_workers),
                         idle_timeout_s=o.idle_timeout_s),
            "gpu": Group(o.gpu_worker_cpus, o.gpu_worker_memory, gpus=1, max=exp.workers,
                         idle_timeout_s=o.gpu_idle_timeout_s)}


# -- pure rendering --------------------------------------------------------------------------


def _resources(g: Group) -> dict:
    amount = {"cpu": str(g.cpus), "memory": g.memory}
    if g.gpus:
        amount["nvidia.com/gpu"] = str(g.gpus)
    return {"requests": dict(amount), "limits": dict(amount)}


def pod_template(name: str, image: str, g: Group, o: RenderOptions,
                 ports: list | None = None, config_map: str | None = None) -> dict:
    """A non-root Ray pod with the shared volume (and, for the head, the experiment file)."""
    mounts = [{"name": "checkpoints", "mountPath": o.storage_mount},
              {"name": "shm", "mountPath": "/dev/shm"}]
    volumes = [{"name": "checkpoints", "persistentVolumeClaim": {"claimName": o.storage_claim}},
               {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}]
    if config_map:
        mounts.append({"name": "experiment", "mountPath": CONFIG_MOUNT, "readOnly": True})
        volumes.append({"name": "experiment", "configMap": {"name": config_map}})
    container = {"name": name, "image": image,
                 "env": [{"name": "AUGTRAIN_STORAGE", "value": o.storage_mount}],
                 "resources": _resources(g), "securityContext": copy.deepcopy(CONTAINER_SECURITY),
                 "volumeMounts": mounts}
    if ports:
        container["ports"] = ports
    spec: dict = {"securityContext": copy.deepcopy(POD_SECURITY), "containers": [container],
                  "volumes": volumes}
    if g.gpus:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"spec": spec}


def cluster_spec(exp: Experiment, overlay: str, o: RenderOptions,
                 config_map: str | None = None) -> dict:
    """An autoscaling RayCluster spec: a head with no tasks, worker groups from 0 pods."""
    image = exp.image or f"{IMAGE}:{IMAGE_TAG}-{overlay}"
    ports = [{"containerPort": 6379, "name": "gcs-server"},
             {"containerPort": 8265, "name": "dashboard"},
             {"containerPort": 10001, "name": "client"}]
    groups = [{"groupName": name, "replicas": 0, "minReplicas": 0, "maxReplicas": g.max,
               "idleTimeoutSeconds": g.idle_timeout_s, "rayStartParams": {},
               "template": pod_template("ray-worker", image, g, o)}
              for name, g in worker_groups(exp, overlay, o).items()]
    head = Group(o.head_cpus, o.head_memory)
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "authOptions": {"mode": "token", "secretName": o.auth_secret},
        "autoscalerOptions": {
            "version": "v2", "upscalingMode": "Default", "idleTimeoutSeconds": o.idle_timeout_s,
            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                          "limits": {"cpu": "500m", "memory": "512Mi"}},
            "securityContext": {"runAsNonRoot": True, **copy.deepcopy(CONTAINER_SECURITY)},
        },
        "headGroupSpec": {
            "serviceType": "ClusterIP", "enableIngress": False,
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": pod_template("ray-head", image, head, o, ports, config_map),
        },
        "workerGroupSpecs": groups,
    }


def entrypoint(exp: Experiment, job: str, o: RenderOptions, checkpoint: str | None) -> str:
    """The job's command: the experiment file from the ConfigMap, outputs on the shared volume."""
    config = f"{CONFIG_MOUNT}/{CONFIG_KEY}"
    output = f"{o.storage_mount}/runs/{exp.name}"
    if job == "pretrain":
        return f"augtrain pretrain -c {config} --set output={output} --resume latest"
    if job == "search":  # default: the newest checkpoint of this experiment's pretraining
        checkpoint = checkpoint or f"{output}/checkpoints"
        return f"augtrain search -c {config} --set output={output} --checkpoint {checkpoint} --resume"
    raise ValueError(f"job {job!r}: expected one of {', '.join(JOBS)}")


def render_objects(exp: Experiment, config_text: str, overlay: str = "cpu",
                   job: str = "pretrain", checkpoint: str | None = None,
                   options: RenderOptions | None = None) -> list[dict]:
    """[ConfigMap with the experiment file, RayJob running ``job`` on its own cluster]."""
    o = options or RenderOptions()
    job_id = exp.name if job == "pretrain" else f"{exp.name}-search"[:MAX_RAYJOB_NAME].rstrip("-")
    config_map = f"{job_id}-config"
    labels = {"app.kubernetes.io/part-of": "augtrain", "augtrain.io/experiment": exp.name,
              "augtrain.io/job": job}
    cluster = cluster_spec(exp, overlay, o, config_map)
    head = cluster["headGroupSpec"]["template"]["spec"]
    return [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": config_map, "labels": labels}, "data": {CONFIG_KEY: config_text}},
        {"apiVersion": "ray.io/v1", "kind": "RayJob",
         "metadata": {"name": job_id, "labels": labels},
         "spec": {
             "entrypoint": entrypoint(exp, job, o, checkpoint),
             "runtimeEnvYAML": f"env_vars:\n  AUGTRAIN_STORAGE: {o.storage_mount}\n",
             "shutdownAfterJobFinishes": True,
             "ttlSecondsAfterFinished": o.ttl_after_finished_s,
             "activeDeadlineSeconds": o.active_deadline_s,
             "backoffLimit": o.backoff_limit,
             "submitterPodTemplate": {"spec": {
                 "restartPolicy": "Never",
                 "securityContext": copy.deepcopy(POD_SECURITY),
                 "containers": [{
                     "name": "ray-job-submitter", "image": head["containers"][0]["image"],
                     "resources": {"requests": {"cpu": "200m", "memory": "512Mi"},
                                   "limits": {"cpu": "1", "memory": "1Gi"}},
                     "securityContext": copy.deepcopy(CONTAINER_SECURITY)}]}},
             "rayClusterSpec": cluster,
         }},
    ]


def render_file(path: str | Path, overlay: str = "cpu", job: str = "pretrain",
                checkpoint: str | None = None, options: RenderOptions | None = None) -> list[dict]:
    """Read an experiment file, check the keys rendering uses, render ConfigMap and RayJob."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    exp = experiment_from_config(data, str(path))
    worker_groups(exp, overlay, options or RenderOptions(), str(path))  # option/overlay checks
    return render_objects(exp, text, overlay, job, checkpoint, options)


def to_yaml(objects: list[dict]) -> str:
    """Multi-document YAML, keys in the order written, no aliases, multi-line text as blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return "---\n".join(yaml.dump(o, Dumper=Dumper, sort_keys=False, width=100) for o in objects)
