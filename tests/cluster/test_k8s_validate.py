"""``augtrain k8s validate``: the shipped manifests pass; one broken manifest per rule fails with
the right message, naming file, object and field."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Callable

import pytest
import yaml

from augtrain.cluster.k8s.validate import validate_objects, validate_paths
from conftest import REPO, run_cli

K8S = REPO / "k8s"
BASE = K8S / "base"
JOBS = K8S / "jobs" / "base"
HAS_KUSTOMIZE = bool(shutil.which("kubectl") or shutil.which("kustomize"))


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


CLUSTER = load(BASE / "raycluster.yaml")
JOB = load(JOBS / "rayjob-pretrain.yaml")


def test_every_base_manifest_validates_file_by_file():
    files = sorted(p for d in (BASE, JOBS) for p in d.glob("*.yaml") if p.name != "kustomization.yaml")
    assert {p.name for p in files} >= {"raycluster.yaml", "rayjob-pretrain.yaml",
                                       "rayjob-policy-search.yaml", "checkpoints-pvc.yaml",
                                       "dashboard-networkpolicy.yaml"}
    count, problems = validate_paths(files)
    assert count == len(files) and problems == []


@pytest.mark.skipif(not HAS_KUSTOMIZE, reason="needs kubectl or kustomize to build kustomizations")
def test_every_kustomization_in_k8s_builds_and_validates():
    count, problems = validate_paths([K8S])
    assert problems == []
    # cluster (PVC, NetworkPolicy, RayCluster) in base + 2 overlays; 2 RayJobs in jobs/base + 2 overlays
    assert count == 3 * 3 + 3 * 2


@pytest.mark.skipif(not HAS_KUSTOMIZE, reason="needs kubectl or kustomize to build kustomizations")
def test_overlays_differ_in_image_and_worker_groups():
    from augtrain.cluster.k8s.validate import kustomize_build, load_documents

    for overlay, groups, tag in (("cpu", ["cpu"], "0.1.0-cpu"), ("gpu", ["cpu", "gpu"], "0.1.0-gpu")):
        docs = [d for path in (K8S / "overlays" / overlay, K8S / "jobs" / "overlays" / overlay)
                for d in load_documents(kustomize_build(path), overlay)]
        specs = [d["spec"] if d["kind"] == "RayCluster" else d["spec"]["rayClusterSpec"]
                 for d in docs if d["kind"] in ("RayCluster", "RayJob")]
        assert len(specs) == 3
        for spec in specs:
            assert [g["groupName"] for g in spec["workerGroupSpecs"]] == groups
            assert spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == f"augtrain:{tag}"


def test_shipped_cluster_has_the_promised_settings():
    spec = CLUSTER["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    assert spec["authOptions"]["mode"] == "token"
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["maxReplicas"] and group["idleTimeoutSeconds"] > 0
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        res = pod["containers"][0]["resources"]
        assert res["requests"] and res["limits"]
        assert any(v.get("persistentVolumeClaim") for v in pod["volumes"])
    for job in ("rayjob-pretrain.yaml", "rayjob-policy-search.yaml"):
        js = load(JOBS / job)["spec"]
        assert js["shutdownAfterJobFinishes"] is True and js["ttlSecondsAfterFinished"] > 0
        assert js["activeDeadlineSeconds"] > 0 and js["backoffLimit"] >= 0


# -- one broken manifest per rule --------------------------------------------------------------

Mutation = Callable[[dict], None]


def cl(mutate: Mutation) -> dict:
    obj = copy.deepcopy(CLUSTER)
    mutate(obj)
    return obj


def jb(mutate: Mutation) -> dict:
    obj = copy.deepcopy(JOB)
    mutate(obj)
    return obj


def wg(obj: dict, i: int = 0) -> dict:
    return obj["spec"]["workerGroupSpecs"][i]


def head_env(obj: dict, name: str, value: str) -> None:
    obj["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": name, "value": value})


def autoscaling_off(obj: dict) -> None:
    obj["spec"]["enableInTreeAutoscaling"] = False
    del obj["spec"]["autoscalerOptions"]


BROKEN = [
    # (id, object, field, message fragment)
    ("min-greater-than-max", cl(lambda o: wg(o).update(minReplicas=9, maxReplicas=2)),
     "spec.workerGroupSpecs[0].minReplicas", "minReplicas (9) is greater than maxReplicas (2)"),
    ("no-max-without-autoscaling", cl(lambda o: (autoscaling_off(o), wg(o).pop("maxReplicas"))),
     "spec.workerGroupSpecs[0].maxReplicas", "maxReplicas must be set when enableInTreeAutoscaling is false"),
    ("no-min-without-autoscaling", cl(lambda o: (autoscaling_off(o), wg(o).pop("minReplicas"))),
     "spec.workerGroupSpecs[0].minReplicas", "minReplicas must be set when enableInTreeAutoscaling is false"),
    ("negative-min", cl(lambda o: wg(o).update(minReplicas=-1)),
     "spec.workerGroupSpecs[0].minReplicas", "minReplicas (-1) must be >= 0"),
    ("negative-idle-timeout", cl(lambda o: wg(o).update(idleTimeoutSeconds=-5)),
     "spec.workerGroupSpecs[0].idleTimeoutSeconds", "idleTimeoutSeconds (-5) must be >= 0"),
    ("raycluster-name-too-long", cl(lambda o: o["metadata"].update(name="a" * 54)),
     "metadata.name", "is 54 characters; at most 53"),
    ("raycluster-name-not-dns1035", cl(lambda o: o["metadata"].update(name="Augtrain_1")),
     "metadata.name", "not a DNS-1035 label"),
    ("head-without-containers",
     cl(lambda o: o["spec"]["headGroupSpec"]["template"]["spec"].update(containers=[])),
     "spec.headGroupSpec.template.spec.containers", "headGroupSpec should have at least one container"),
    ("worker-without-containers", cl(lambda o: wg(o)["template"]["spec"].update(containers=[])),
     "spec.workerGroupSpecs[0].template.spec.containers", "workerGroupSpec should have at least one container"),
    ("resources-in-both-places",
     cl(lambda o: wg(o).update(rayStartParams={"num-cpus": "4"}, resources={"CPU": "4"})),
     "spec.workerGroupSpecs[0].resources", "should not be set in both rayStartParams and resources"),
    ("labels-in-ray-start-params", cl(lambda o: wg(o).update(rayStartParams={"labels": "a=b"})),
     "spec.workerGroupSpecs[0].rayStartParams.labels", "rayStartParams['labels'] is not supported"),
    ("autoscaler-v2-restart-policy",
     cl(lambda o: wg(o)["template"]["spec"].update(restartPolicy="Always")),
     "spec.workerGroupSpecs[0].template.spec.restartPolicy", "should be Never or unset when using autoscaler v2"),
    ("suspended-group-with-autoscaler", cl(lambda o: wg(o).update(suspend=True)),
     "spec.workerGroupSpecs[0].suspend", "cannot be suspended with the autoscaler enabled"),
    ("duplicate-group-name", cl(lambda o: wg(o, 1).update(groupName="cpu")),
     "spec.workerGroupSpecs[1].groupName", "duplicate worker groupName 'cpu'"),
    ("token-auth-old-ray", cl(lambda o: o["spec"].update(rayVersion="2.46.0")),
     "spec.rayVersion", "minimum Ray version is 2.52.0, got 2.46.0"),
    ("token-auth-no-ray-version", cl(lambda o: o["spec"].pop("rayVersion")),
     "spec.rayVersion", "rayVersion is not set"),
    ("v2-env-without-autoscaling",
     cl(lambda o: (autoscaling_off(o), head_env(o, "RAY_enable_autoscaler_v2", "1"))),
     "spec.headGroupSpec.template.spec.containers[0].env", "cannot be true when enableInTreeAutoscaling is false"),
    ("v2-env-and-version", cl(lambda o: head_env(o, "RAY_enable_autoscaler_v2", "1")),
     "spec.autoscalerOptions.version", "use only the former"),
    ("managed-by", cl(lambda o: o["spec"].update(managedBy="someone-else")),
     "spec.managedBy", "managedBy must be one of"),
    # RayJob
    ("suspend-without-shutdown", jb(lambda o: o["spec"].update(suspend=True, shutdownAfterJobFinishes=False, ttlSecondsAfterFinished=0)),
     "spec.suspend", "shutdownAfterJobFinishes set to false cannot be suspended"),
    ("ttl-without-shutdown", jb(lambda o: o["spec"].update(shutdownAfterJobFinishes=False)),
     "spec.ttlSecondsAfterFinished", "only takes effect with shutdownAfterJobFinishes: true"),
    ("negative-ttl", jb(lambda o: o["spec"].update(ttlSecondsAfterFinished=-1)),
     "spec.ttlSecondsAfterFinished", "must be a non-negative integer"),
    ("cluster-spec-and-selector", jb(lambda o: o["spec"].update(clusterSelector={"ray.io/cluster": "augtrain"})),
     "spec.rayClusterSpec", "exactly one of rayClusterSpec and clusterSelector must be set (both are)"),
    ("neither-cluster-spec-nor-selector", jb(lambda o: o["spec"].pop("rayClusterSpec")),
     "spec.rayClusterSpec", "exactly one of rayClusterSpec and clusterSelector must be set (neither is)"),
    ("selector-without-cluster-name",
     jb(lambda o: (o["spec"].pop("rayClusterSpec"), o["spec"].update(clusterSelector={"team": "a"}))),
     "spec.clusterSelector", "needs a non-empty 'ray.io/cluster'"),
    ("interactive-mode-backoff", jb(lambda o: o["spec"].update(submissionMode="InteractiveMode")),
     "spec.backoffLimit", "backoffLimit is incompatible with InteractiveMode"),
    ("sidecar-mode-submitter-template", jb(lambda o: o["spec"].update(submissionMode="SidecarMode")),
     "spec.submitterPodTemplate", "SidecarMode does not support submitterPodTemplate"),
    ("zero-active-deadline", jb(lambda o: o["spec"].update(activeDeadlineSeconds=0)),
     "spec.activeDeadlineSeconds", "activeDeadlineSeconds must be a positive integer"),
    ("negative-backoff", jb(lambda o: o["spec"].update(backoffLimit=-1)),
     "spec.backoffLimit", "backoffLimit must be a non-negative integer"),
    ("runtime-env-not-yaml", jb(lambda o: o["spec"].update(runtimeEnvYAML="env_vars: [unclosed")),
     "spec.runtimeEnvYAML", "runtimeEnvYAML is not valid YAML"),
    ("rayjob-name-too-long", jb(lambda o: o["metadata"].update(name="a" * 48)),
     "metadata.name", "is 48 characters; at most 47"),
    ("deletion-rules-with-shutdown",
     jb(lambda o: o["spec"].update(ttlSecondsAfterFinished=0, deletionStrategy={"deletionRules": [
         {"policy": "DeleteCluster", "condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 0}}]})),
     "spec.deletionStrategy.deletionRules", "mutually exclusive"),
    ("job-cluster-spec-rules-apply",
     jb(lambda o: o["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(minReplicas=5, maxReplicas=1)),
     "spec.rayClusterSpec.workerGroupSpecs[0].minReplicas", "minReplicas (5) is greater than maxReplicas (1)"),
    # schema (KubeRay CRDs, core Kubernetes)
    ("unknown-field", cl(lambda o: o["spec"].update(enableInTreeAutoscalling=True)),
     "spec", "unknown field(s): 'enableInTreeAutoscalling'"),
    ("wrong-type", cl(lambda o: wg(o).update(maxReplicas="eight")),
     "spec.workerGroupSpecs[0].maxReplicas", "'eight' is not of type 'integer'"),
    ("missing-required", cl(lambda o: wg(o).pop("groupName")),
     "spec.workerGroupSpecs[0]", "'groupName' is a required property"),
    ("bad-enum", cl(lambda o: o["spec"]["autoscalerOptions"].update(upscalingMode="Fast")),
     "spec.autoscalerOptions.upscalingMode", "'Fast' is not one of"),
    ("pod-template-unknown-field",
     cl(lambda o: wg(o)["template"]["spec"]["containers"][0].update(imagePullPolicyy="Always")),
     "spec.workerGroupSpecs[0].template.spec.containers[0]", "unknown field(s): 'imagePullPolicyy'"),
    ("metadata-label-not-string", cl(lambda o: o["metadata"].update(labels={"tier": 1})),
     "metadata.labels.tier", "1 is not of type 'string'"),
    ("unknown-ray-kind", cl(lambda o: o.update(kind="RayServise")),
     "kind", "no KubeRay CRD for kind 'RayServise'"),
    ("core-object-typo",
     {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
      "spec": {"accessMode": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}},
     "spec", "unknown field(s): 'accessMode'"),
]


def test_the_unbroken_objects_pass():
    assert validate_objects([CLUSTER, JOB], "x") == []


@pytest.mark.parametrize("obj,field,fragment", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_manifest_is_rejected_with_the_right_message(obj, field, fragment):
    problems = validate_objects([obj], "broken.yaml")
    assert problems, "accepted a broken manifest"
    assert any(p.field == field and fragment in p.message for p in problems), \
        "\n".join(map(str, problems))
    assert all(p.source == "broken.yaml" for p in problems)


def test_cli_names_file_object_and_field(tmp_path, bare_env):
    bad = tmp_path / "job.yaml"
    obj = jb(lambda o: o["spec"].update(shutdownAfterJobFinishes=False))
    good = tmp_path / "cluster.yaml"
    good.write_text(yaml.safe_dump(CLUSTER))
    bad.write_text(yaml.safe_dump(obj))
    r = run_cli(["k8s", "validate", str(good), str(bad)], bare_env, timeout=120)
    assert r.returncode == 1
    assert (f"{bad}: RayJob/augtrain-pretrain: spec.ttlSecondsAfterFinished: "
            "ttlSecondsAfterFinished only takes effect") in r.stdout
    assert str(good) not in r.stdout
    assert "2 objects checked, 1 problems" in r.stderr
    ok = run_cli(["k8s", "validate", str(good)], bare_env, timeout=120)
    assert ok.returncode == 0 and "1 objects checked, 0 problems" in ok.stderr


def test_unparseable_yaml_names_the_file(tmp_path, bare_env):
    bad = tmp_path / "oops.yaml"
    bad.write_text("kind: [unclosed\n")
    r = run_cli(["k8s", "validate", str(bad)], bare_env, timeout=120)
    assert r.returncode == 2 and f"{bad}: not valid YAML" in r.stderr
