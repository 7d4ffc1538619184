"""``augtrain k8s render``: a RayJob (plus the ConfigMap holding the experiment config) for one
experiment, on its own autoscaling KubeRay cluster.

Only two top-level keys of the experiment file are read here: ``name`` and the optional
``cluster:`` section (below); every other key belongs to the experiment and travels unread in
the ConfigMap. Rendering is pure: dicts in, dicts out.

    name: mae-digits
    cluster:
      image: registry.example.com/augtrain:0.1.0-gpu   # default augtrain:0.1.0-<overlay>
      head: {cpus: 2, memory: 8Gi}
      cpu_workers: {min: 0, max: 8, cpus: 8, memory: 32Gi, idle_timeout_s: 120}
      gpu_workers: {min: 0, max: 4, cpus: 8, memory: 64Gi, gpus: 1, idle_timeout_s: 300}
      storage: {claim: augtrain-checkpoints, mount: /mnt/augtrain}
      auth_secret: augtrain-ray-token
      active_deadline_s: 172800
      ttl_after_finished_s: 600
      backoff_limit: 1
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, fields
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


@dataclass
class GroupSettings:
    """One node group: resources per pod and, for workers, the autoscaling range."""

    cpus: int = 8
    memory: str = "32Gi"
    gpus: int = 0
    min: int = 0
    max: int = 8
    idle_timeout_s: int = 120


@dataclass
class StorageSettings:
    """The shared volume (a ReadWriteMany PVC) for checkpoints and results."""

    claim: str = "augtrain-checkpoints"
    mount: str = "/mnt/augtrain"


@dataclass
class ClusterSettings:
    """The ``cluster:`` section of an experiment file."""

    image: str | None = None
    ray_version: str = RAY_VERSION
    head: GroupSettings = field(default_factory=lambda: GroupSettings(cpus=2, memory="8Gi"))
    cpu_workers: GroupSettings = field(default_factory=GroupSettings)
    gpu_workers: GroupSettings = field(default_factory=lambda: GroupSettings(
        memory="64Gi", gpus=1, max=4, idle_timeout_s=300))
    storage: StorageSettings = field(default_factory=StorageSettings)
    auth_secret: str = "augtrain-ray-token"
    active_deadline_s: int = 172800
    ttl_after_finished_s: int = 600
    backoff_limit: int = 1


_NESTED = {"head": GroupSettings, "cpu_workers": GroupSettings, "gpu_workers": GroupSettings,
           "storage": StorageSettings}


def _build(cls: type, data: Any, where: str, source: str) -> Any:
    """A settings dataclass from a mapping; unknown or ill-typed keys name key and file."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: {where} must be a mapping")
    defaults = cls()
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ValueError(f"{source}: unknown key {where}.{key} (known: {', '.join(known)})")
        if key in _NESTED:
            values[key] = _merge(getattr(defaults, key), _build(_NESTED[key], value, f"{where}.{key}",
                                                                source), value)
            continue
        expected = type(getattr(defaults, key)) if getattr(defaults, key) is not None else str
        if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{source}: {where}.{key} must be an integer, got {value!r}")
        if expected is str and not isinstance(value, str):
            raise ValueError(f"{source}: {where}.{key} must be a string, got {value!r}")
        values[key] = value
    return cls(**{**{k: getattr(defaults, k) for k in known}, **values})


def _merge(default: Any, built: Any, given: dict) -> Any:
    """Keys given in the file over the section's own defaults (not the class defaults)."""
    return type(default)(**{**default.__dict__, **{k: getattr(built, k) for k in given}})


def settings_from_config(data: Any, source: str) -> tuple[str, ClusterSettings]:
    """(job name, cluster settings) from a parsed experiment file."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: an experiment file must be a YAML mapping")
    if "name" not in data:
        raise ValueError(f"{source}: missing key name (the experiment name names the RayJob)")
    name = job_name(data["name"], source)
    settings = _build(ClusterSettings, data.get("cluster") or {}, "cluster", source)
    for group in ("cpu_workers", "gpu_workers"):
        g = getattr(settings, group)
        if not 0 <= g.min <= g.max:
            raise ValueError(f"{source}: cluster.{group}: need 0 <= min <= max, got min={g.min} "
                             f"max={g.max}")
    return name, settings


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


# -- pure rendering --------------------------------------------------------------------------


def _resources(g: GroupSettings) -> dict:
    amount = {"cpu": str(g.cpus), "memory": g.memory}
    if g.gpus:
        amount["nvidia.com/gpu"] = str(g.gpus)
    return {"requests": dict(amount), "limits": dict(amount)}


def pod_template(name: str, image: str, g: GroupSettings, s: ClusterSettings,
                 ports: list | None = None, config_map: str | None = None) -> dict:
    """A non-root Ray pod with the shared volume (and, for the head, the experiment config)."""
    mounts = [{"name": "checkpoints", "mountPath": s.storage.mount},
              {"name": "shm", "mountPath": "/dev/shm"}]
    volumes = [{"name": "checkpoints", "persistentVolumeClaim": {"claimName": s.storage.claim}},
               {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}]
    if config_map:
        mounts.append({"name": "experiment", "mountPath": CONFIG_MOUNT, "readOnly": True})
        volumes.append({"name": "experiment", "configMap": {"name": config_map}})
    container = {"name": name, "image": image,
                 "env": [{"name": "AUGTRAIN_STORAGE", "value": s.storage.mount}],
                 "resources": _resources(g), "securityContext": copy.deepcopy(CONTAINER_SECURITY),
                 "volumeMounts": mounts}
    if ports:
        container["ports"] = ports
    spec: dict = {"securityContext": copy.deepcopy(POD_SECURITY), "containers": [container],
                  "volumes": volumes}
    if g.gpus:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"spec": spec}


def worker_group(group_name: str, image: str, g: GroupSettings, s: ClusterSettings) -> dict:
    return {"groupName": group_name, "replicas": g.min, "minReplicas": g.min, "maxReplicas": g.max,
            "idleTimeoutSeconds": g.idle_timeout_s, "rayStartParams": {},
            "template": pod_template("ray-worker", image, g, s)}


def cluster_spec(s: ClusterSettings, overlay: str, config_map: str | None = None) -> dict:
    """An autoscaling RayCluster spec: head with no tasks, CPU (and for ``gpu``, GPU) workers."""
    if overlay not in OVERLAYS:
        raise ValueError(f"overlay {overlay!r}: expected one of {', '.join(OVERLAYS)}")
    image = s.image or f"{IMAGE}:{IMAGE_TAG}-{overlay}"
    ports = [{"containerPort": 6379, "name": "gcs-server"},
             {"containerPort": 8265, "name": "dashboard"},
             {"containerPort": 10001, "name": "client"}]
    groups = [worker_group("cpu", image, s.cpu_workers, s)]
    if overlay == "gpu":
        groups.append(worker_group("gpu", image, s.gpu_workers, s))
    return {
        "rayVersion": s.ray_version,
        "enableInTreeAutoscaling": True,
        "authOptions": {"mode": "token", "secretName": s.auth_secret},
        "autoscalerOptions": {
            "version": "v2", "upscalingMode": "Default",
            "idleTimeoutSeconds": s.cpu_workers.idle_timeout_s,
            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                          "limits": {"cpu": "500m", "memory": "512Mi"}},
            "securityContext": {"runAsNonRoot": True, **copy.deepcopy(CONTAINER_SECURITY)},
        },
        "headGroupSpec": {
            "serviceType": "ClusterIP", "enableIngress": False,
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": pod_template("ray-head", image, s.head, s, ports, config_map),
        },
        "workerGroupSpecs": groups,
    }


def entrypoint(job: str, checkpoint: str | None) -> str:
    config = f"{CONFIG_MOUNT}/{CONFIG_KEY}"
    if job == "pretrain":
        return f"augtrain pretrain -c {config} --resume latest"
    if job == "search":
        if not checkpoint:
            raise ValueError("a search job needs --checkpoint (a pretraining checkpoint on the "
                             "shared volume, e.g. /mnt/augtrain/<run>/checkpoint_latest)")
        return f"augtrain search -c {config} --checkpoint {checkpoint} --resume"
    raise ValueError(f"job {job!r}: expected one of {', '.join(JOBS)}")


def render_objects(name: str, config_text: str, s: ClusterSettings, overlay: str = "cpu",
                   job: str = "pretrain", checkpoint: str | None = None) -> list[dict]:
    """[ConfigMap with the experiment file, RayJob running ``job`` on its own cluster]."""
    job_id = name if job == "pretrain" else f"{name}-search"[:MAX_RAYJOB_NAME].rstrip("-")
    config_map = f"{job_id}-config"
    labels = {"app.kubernetes.io/part-of": "augtrain", "augtrain.io/experiment": name}
    head_spec = cluster_spec(s, overlay, config_map)["headGroupSpec"]["template"]["spec"]
    return [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": config_map, "labels": labels}, "data": {CONFIG_KEY: config_text}},
        {"apiVersion": "ray.io/v1", "kind": "RayJob",
         "metadata": {"name": job_id, "labels": labels},
         "spec": {
             "entrypoint": entrypoint(job, checkpoint),
             "runtimeEnvYAML": f"env_vars:\n  AUGTRAIN_STORAGE: {s.storage.mount}\n",
             "shutdownAfterJobFinishes": True,
             "ttlSecondsAfterFinished": s.ttl_after_finished_s,
             "activeDeadlineSeconds": s.active_deadline_s,
             "backoffLimit": s.backoff_limit,
             "submitterPodTemplate": {"spec": {
                 "restartPolicy": "Never",
                 "securityContext": copy.deepcopy(head_spec["securityContext"]),
                 "containers": [{
                     "name": "ray-job-submitter", "image": head_spec["containers"][0]["image"],
                     "resources": {"requests": {"cpu": "200m", "memory": "512Mi"},
                                   "limits": {"cpu": "1", "memory": "1Gi"}},
                     "securityContext": copy.deepcopy(CONTAINER_SECURITY)}]}},
             "rayClusterSpec": cluster_spec(s, overlay, config_map),
         }},
    ]


def render_file(path: str | Path, overlay: str = "cpu", job: str = "pretrain",
                checkpoint: str | None = None) -> list[dict]:
    """Read and check an experiment file, then render its ConfigMap and RayJob."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    name, settings = settings_from_config(data, str(path))
    return render_objects(name, text, settings, overlay, job, checkpoint)


def to_yaml(objects: list[dict]) -> str:
    """Multi-document YAML, keys in the order written, no aliases."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)

    return "---\n".join(yaml.dump(o, Dumper=Dumper, sort_keys=False, width=100) for o in objects)
