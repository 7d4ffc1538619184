"""The rules the KubeRay controller enforces (``ray-operator/controllers/ray/utils/validation.go``)
and the CEL rules of its CRDs, re-implemented as pure functions on manifest dicts.

A schema-valid manifest that breaks one of these is accepted by ``kubectl apply`` and then
rejected by the operator at reconcile time, with only an event to show for it; checking them
offline moves that failure to before the apply. Each rule returns ``Finding``s that name the
field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

MAX_RAYCLUSTER_NAME = 53
MAX_RAYJOB_NAME = 47
MIN_TOKEN_AUTH_RAY_VERSION = (2, 52, 0)
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1035_MAX = 63
RESOURCE_PARAMS = ("num-cpus", "num-gpus", "memory", "resources")
AUTOSCALER_V2_ENV = "RAY_enable_autoscaler_v2"
MANAGED_BY = ("ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue")
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
CLUSTER_SELECTOR_KEY = "ray.io/cluster"


@dataclass(frozen=True)
class Finding:
    """One broken rule: the dotted field it concerns and what is wrong."""

    field: str
    message: str


# -- helpers ---------------------------------------------------------------------------------


def _truthy_env(containers: list, name: str) -> bool:
    for env in (containers[0].get("env") or []) if containers else []:
        if env.get("name") == name and str(env.get("value", "")).lower() in ("1", "true"):
            return True
    return False


def _has_env(containers: list, name: str) -> bool:
    return bool(containers) and any(e.get("name") == name for e in containers[0].get("env") or [])


def _containers(group: dict) -> list:
    return ((group.get("template") or {}).get("spec") or {}).get("containers") or []


def _restart_policy(group: dict) -> str:
    return ((group.get("template") or {}).get("spec") or {}).get("restartPolicy") or ""


def autoscaling_enabled(spec: dict) -> bool:
    return bool(spec.get("enableInTreeAutoscaling"))


def autoscaler_v2(spec: dict) -> bool:
    """v2 when ``autoscalerOptions.version: v2`` or the head sets ``RAY_enable_autoscaler_v2``."""
    if not autoscaling_enabled(spec):
        return False
    if ((spec.get("autoscalerOptions") or {}).get("version")) == "v2":
        return True
    return _truthy_env(_containers(spec.get("headGroupSpec") or {}), AUTOSCALER_V2_ENV)


def parse_version(text: str) -> tuple[int, ...] | None:
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    return tuple(int(x or 0) for x in m.groups()) if m else None


def check_name(name: Any, kind: str, limit: int) -> list[Finding]:
    """``metadata.name``: at most ``limit`` characters and a DNS-1035 label."""
    if not isinstance(name, str) or not name:
        return [Finding("metadata.name", f"{kind} needs a metadata.name")]
    out = []
    if len(name) > limit:
        out.append(Finding("metadata.name",
                           f"{kind} name {name!r} is {len(name)} characters; at most {limit}"))
    if not DNS1035.match(name) or len(name) > DNS1035_MAX:
        out.append(Finding("metadata.name",
                           f"{kind} name {name!r} is not a DNS-1035 label (lower-case letters, "
                           "digits and '-', starting with a letter, ending with a letter or digit)"))
    return out


# -- RayCluster spec (also inside RayJob.spec.rayClusterSpec) ----------------------------------


def check_cluster_spec(spec: dict, at: str = "spec") -> list[Finding]:
    """``ValidateRayClusterSpec`` plus the replica rules, on a RayCluster spec found at ``at``."""
    out: list[Finding] = []
    head = spec.get("headGroupSpec") or {}
    if not _containers(head):
        out.append(Finding(f"{at}.headGroupSpec.template.spec.containers",
                           "headGroupSpec should have at least one container"))
    out += _group_resources(head, f"{at}.headGroupSpec", "head")
    autoscaling = autoscaling_enabled(spec)
    v2 = autoscaler_v2(spec)
    seen: set[str] = set()
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        out += _check_worker_group(group, f"{at}.workerGroupSpecs[{i}]", autoscaling, v2, seen)
    out += _check_autoscaler(spec, at, autoscaling, v2)
    out += _check_auth(spec, at)
    return out


def _group_resources(group: dict, at: str, name: str) -> list[Finding]:
    out = []
    params = group.get("rayStartParams") or {}
    if any(params.get(k) for k in RESOURCE_PARAMS) and group.get("resources"):
        out.append(Finding(f"{at}.resources",
                           f"resource fields should not be set in both rayStartParams and "
                           f"resources for {name} group; use only one"))
    if "labels" in params:
        out.append(Finding(f"{at}.rayStartParams.labels",
                           f"rayStartParams['labels'] is not supported for {name} group; use "
                           "the top-level labels field"))
    return out


def _check_worker_group(group: dict, at: str, autoscaling: bool, v2: bool,
                        seen: set[str]) -> list[Finding]:
    name = str(group.get("groupName", "?"))
    out: list[Finding] = []
    if name in seen:
        out.append(Finding(f"{at}.groupName", f"duplicate worker groupName {name!r}"))
    seen.add(name)
    if not _containers(group):
        out.append(Finding(f"{at}.template.spec.containers",
                           "workerGroupSpec should have at least one container"))
    out += _group_resources(group, at, name)
    lo, hi = group.get("minReplicas"), group.get("maxReplicas")
    if not autoscaling and (lo is None or hi is None):
        missing = " and ".join(k for k, v in (("minReplicas", lo), ("maxReplicas", hi)) if v is None)
        out.append(Finding(f"{at}.{'minReplicas' if lo is None else 'maxReplicas'}",
                           f"worker group {name}: {missing} must be set when "
                           "enableInTreeAutoscaling is false"))
    for key, value in (("minReplicas", lo), ("maxReplicas", hi), ("replicas", group.get("replicas"))):
        if isinstance(value, int) and value < 0:
            out.append(Finding(f"{at}.{key}", f"worker group {name}: {key} ({value}) must be >= 0"))
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        out.append(Finding(f"{at}.minReplicas",
                           f"worker group {name}: minReplicas ({lo}) is greater than "
                           f"maxReplicas ({hi})"))
    idle = group.get("idleTimeoutSeconds")
    if isinstance(idle, int) and idle < 0:
        out.append(Finding(f"{at}.idleTimeoutSeconds",
                           f"worker group {name}: idleTimeoutSeconds ({idle}) must be >= 0"))
    if group.get("suspend") and autoscaling:
        out.append(Finding(f"{at}.suspend",
                           f"worker group {name} cannot be suspended with the autoscaler enabled"))
    if v2 and _restart_policy(group) not in ("", "Never"):
        out.append(Finding(f"{at}.template.spec.restartPolicy",
                           f"restartPolicy for worker group {name} should be Never or unset "
                           "when using autoscaler v2"))
    return out


def _check_autoscaler(spec: dict, at: str, autoscaling: bool, v2: bool) -> list[Finding]:
    out: list[Finding] = []
    head = spec.get("headGroupSpec") or {}
    containers = _containers(head)
    options = spec.get("autoscalerOptions") or {}
    if not autoscaling and _truthy_env(containers, AUTOSCALER_V2_ENV):
        out.append(Finding(f"{at}.headGroupSpec.template.spec.containers[0].env",
                           f"{AUTOSCALER_V2_ENV} cannot be true when enableInTreeAutoscaling "
                           "is false"))
    if autoscaling and options.get("version") and _has_env(containers, AUTOSCALER_V2_ENV):
        out.append(Finding(f"{at}.autoscalerOptions.version",
                           f"both autoscalerOptions.version and the head env var "
                           f"{AUTOSCALER_V2_ENV} are set; use only the former"))
    if v2 and _restart_policy(head) not in ("", "Never"):
        out.append(Finding(f"{at}.headGroupSpec.template.spec.restartPolicy",
                           "restartPolicy for head Pod should be Never or unset when using "
                           "autoscaler v2"))
    idle = options.get("idleTimeoutSeconds")
    if isinstance(idle, int) and idle < 0:
        out.append(Finding(f"{at}.autoscalerOptions.idleTimeoutSeconds",
                           f"autoscalerOptions.idleTimeoutSeconds ({idle}) must be >= 0"))
    return out


def _check_auth(spec: dict, at: str) -> list[Finding]:
    if ((spec.get("authOptions") or {}).get("mode")) != "token":
        return []
    version = spec.get("rayVersion")
    if not version:
        return [Finding(f"{at}.rayVersion", "authOptions.mode is 'token' but rayVersion is not "
                                            "set; Ray 2.52.0 or later is required")]
    parsed = parse_version(version)
    if parsed is None:
        return [Finding(f"{at}.rayVersion", f"rayVersion {version!r} is not a version")]
    if parsed < MIN_TOKEN_AUTH_RAY_VERSION:
        return [Finding(f"{at}.rayVersion", f"authOptions.mode is 'token' but the minimum Ray "
                                            f"version is 2.52.0, got {version}")]
    return []


def _check_managed_by(spec: dict) -> list[Finding]:
    value = spec.get("managedBy")
    if value is not None and value not in MANAGED_BY:
        return [Finding("spec.managedBy", f"managedBy must be one of {', '.join(MANAGED_BY)}, "
                                          f"got {value!r}")]
    return []


def check_raycluster(obj: dict) -> list[Finding]:
    """All controller rules for a RayCluster."""
    spec = obj.get("spec") or {}
    return (check_name((obj.get("metadata") or {}).get("name"), "RayCluster", MAX_RAYCLUSTER_NAME)
            + check_cluster_spec(spec) + _check_managed_by(spec))


# -- RayJob ----------------------------------------------------------------------------------


def check_rayjob(obj: dict) -> list[Finding]:
    """All controller rules for a RayJob (``ValidateRayJobSpec``), its cluster spec included."""
    spec = obj.get("spec") or {}
    out = check_name((obj.get("metadata") or {}).get("name"), "RayJob", MAX_RAYJOB_NAME)
    shutdown = bool(spec.get("shutdownAfterJobFinishes"))
    mode = spec.get("submissionMode") or "K8sJobMode"
    selector = spec.get("clusterSelector") or {}
    backoff = spec.get("backoffLimit")
    if spec.get("suspend") and not shutdown:
        out.append(Finding("spec.suspend", "a RayJob with shutdownAfterJobFinishes set to false "
                                           "cannot be suspended"))
    ttl = spec.get("ttlSecondsAfterFinished")
    if isinstance(ttl, int) and ttl < 0:
        out.append(Finding("spec.ttlSecondsAfterFinished",
                           "ttlSecondsAfterFinished must be a non-negative integer"))
    if isinstance(ttl, int) and ttl > 0 and not shutdown:
        out.append(Finding("spec.ttlSecondsAfterFinished",
                           "ttlSecondsAfterFinished only takes effect with "
                           "shutdownAfterJobFinishes: true"))
    has_cluster = spec.get("rayClusterSpec") is not None
    if has_cluster == bool(selector):
        out.append(Finding("spec.rayClusterSpec",
                           "exactly one of rayClusterSpec and clusterSelector must be set"
                           + (" (both are)" if has_cluster else " (neither is)")))
    if selector:
        if not selector.get(CLUSTER_SELECTOR_KEY):
            out.append(Finding("spec.clusterSelector",
                               f"clusterSelector needs a non-empty {CLUSTER_SELECTOR_KEY!r}"))
        if spec.get("suspend"):
            out.append(Finding("spec.suspend", "the clusterSelector mode does not support suspend"))
        if mode == "SidecarMode":
            out.append(Finding("spec.submissionMode", "clusterSelector is not supported in "
                                                      "SidecarMode"))
    if mode == "InteractiveMode" and isinstance(backoff, int) and backoff > 0:
        out.append(Finding("spec.backoffLimit", "backoffLimit is incompatible with InteractiveMode"))
    if mode == "SidecarMode":
        out += _check_sidecar(spec)
    if has_cluster:
        out += check_cluster_spec(spec["rayClusterSpec"], "spec.rayClusterSpec")
    out += _check_runtime_env(spec.get("runtimeEnvYAML"))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not isinstance(deadline, int) or deadline <= 0):
        out.append(Finding("spec.activeDeadlineSeconds",
                           "activeDeadlineSeconds must be a positive integer"))
    if isinstance(backoff, int) and backoff < 0:
        out.append(Finding("spec.backoffLimit", "backoffLimit must be a non-negative integer"))
    out += _check_deletion(spec, shutdown, bool(selector))
    return out + _check_managed_by(spec)


def _check_sidecar(spec: dict) -> list[Finding]:
    out = []
    for key in ("submitterPodTemplate", "submitterConfig"):
        if spec.get(key) is not None:
            out.append(Finding(f"spec.{key}", f"SidecarMode does not support {key}"))
    head = (spec.get("rayClusterSpec") or {}).get("headGroupSpec") or {}
    if _restart_policy(head) not in ("", "Never"):
        out.append(Finding("spec.rayClusterSpec.headGroupSpec.template.spec.restartPolicy",
                           "restartPolicy for head Pod should be Never or unset in SidecarMode"))
    return out


def _check_runtime_env(text: Any) -> list[Finding]:
    if text is None or text == "":
        return []
    import yaml

    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [Finding("spec.runtimeEnvYAML", f"runtimeEnvYAML is not valid YAML: {exc}")]
    if parsed is not None and not isinstance(parsed, dict):
        return [Finding("spec.runtimeEnvYAML", "runtimeEnvYAML must be a YAML mapping")]
    return []


def _check_deletion(spec: dict, shutdown: bool, selector: bool) -> list[Finding]:
    strategy = spec.get("deletionStrategy")
    if not strategy:
        return []
    at = "spec.deletionStrategy"
    legacy = strategy.get("onSuccess") is not None or strategy.get("onFailure") is not None
    rules = strategy.get("deletionRules") or []
    out = []
    if rules and shutdown:
        out.append(Finding(f"{at}.deletionRules", "shutdownAfterJobFinishes and "
                                                  "deletionStrategy.deletionRules are mutually "
                                                  "exclusive"))
    if rules and legacy:
        out.append(Finding(at, "legacy onSuccess/onFailure and deletionRules cannot be used "
                               "together"))
    if not rules and not legacy:
        out.append(Finding(at, "deletionStrategy needs both onSuccess and onFailure, or "
                               "deletionRules"))
    if legacy and (strategy.get("onSuccess") is None or strategy.get("onFailure") is None):
        out.append(Finding(at, "both onSuccess and onFailure must be set with the legacy "
                               "deletion policy fields"))
    for i, rule in enumerate(rules):
        cond = rule.get("condition") or {}
        if "jobStatus" in cond and "jobDeploymentStatus" in cond:
            out.append(Finding(f"{at}.deletionRules[{i}].condition",
                               "jobStatus and jobDeploymentStatus cannot be used together in "
                               "one deletion condition"))
        if isinstance(cond.get("ttlSeconds"), int) and cond["ttlSeconds"] < 0:
            out.append(Finding(f"{at}.deletionRules[{i}].condition.ttlSeconds",
                               "ttlSeconds must be non-negative"))
        if selector and rule.get("policy") in ("DeleteCluster", "DeleteWorkers"):
            out.append(Finding(f"{at}.deletionRules[{i}].policy",
                               f"policy {rule.get('policy')} is not supported with clusterSelector"))
    return out


RULES: dict[str, Callable[[dict], list[Finding]]] = {
    "RayCluster": check_raycluster,
    "RayJob": check_rayjob,
}


def check_rules(obj: dict) -> list[Finding]:
    """Controller rules for a ``ray.io`` object; other kinds have none here."""
    if not isinstance(obj, dict) or not str(obj.get("apiVersion", "")).startswith("ray.io/"):
        return []
    rule = RULES.get(str(obj.get("kind")))
    return rule(obj) if rule else []
