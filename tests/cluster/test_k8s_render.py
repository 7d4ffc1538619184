"""``augtrain k8s render``: a RayJob (+ ConfigMap) per experiment that validates, for every
overlay and job kind; bad `name`/`cluster:` keys are errors naming key and file."""

from __future__ import annotations

import pytest
import yaml

from augtrain.cluster.k8s.render import JOBS, OVERLAYS, render_file
from augtrain.cluster.k8s.validate import validate_objects
from conftest import run_cli

EXPERIMENT = """\
name: MAE_digits
model: {name: vit-tiny, objective: mae}
cluster:
  image: registry.example.com/augtrain:0.1.0
  cpu_workers: {cpus: 4, memory: 16Gi, max: 6}
  gpu_workers: {max: 2}
  active_deadline_s: 3600
"""


@pytest.fixture
def experiment(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT)
    return path


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("job", JOBS)
def test_every_rendered_rayjob_validates(experiment, overlay, job):
    objects = render_file(experiment, overlay=overlay, job=job, checkpoint="/mnt/augtrain/run/ckpt")
    assert [o["kind"] for o in objects] == ["ConfigMap", "RayJob"]
    assert validate_objects(objects, str(experiment)) == []
    config_map, rayjob = objects
    assert config_map["data"]["config.yaml"] == EXPERIMENT
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["activeDeadlineSeconds"] == 3600
    assert spec["entrypoint"].startswith(f"augtrain {job} -c /etc/augtrain/config.yaml")
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert {"name": config_map["metadata"]["name"]} == head["volumes"][-1]["configMap"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert sorted(groups) == (["cpu"] if overlay == "cpu" else ["cpu", "gpu"])
    assert groups["cpu"]["maxReplicas"] == 6 and groups["cpu"]["minReplicas"] == 0
    cpu_res = groups["cpu"]["template"]["spec"]["containers"][0]["resources"]
    assert cpu_res["limits"] == {"cpu": "4", "memory": "16Gi"}
    if overlay == "gpu":
        gpu = groups["gpu"]
        assert gpu["maxReplicas"] == 2
        assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_names_follow_the_experiment(experiment):
    pre = render_file(experiment, job="pretrain")[1]
    search = render_file(experiment, job="search", checkpoint="/c")[1]
    assert pre["metadata"]["name"] == "mae-digits"
    assert search["metadata"]["name"] == "mae-digits-search"


def test_default_image_follows_the_overlay(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("name: e1\n")
    for overlay in OVERLAYS:
        job = render_file(path, overlay=overlay)[1]
        head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        assert head["containers"][0]["image"] == f"augtrain:0.1.0-{overlay}"


@pytest.mark.parametrize("text,fragment", [
    ("model: x\n", "missing key name"),
    ("name: e\ncluster: {gpus: 2}\n", "unknown key cluster.gpus"),
    ("name: e\ncluster: {cpu_workers: {maxx: 2}}\n", "unknown key cluster.cpu_workers.maxx"),
    ("name: e\ncluster: {cpu_workers: {max: four}}\n", "cluster.cpu_workers.max must be an integer"),
    ("name: e\ncluster: {cpu_workers: {min: 3, max: 2}}\n", "cluster.cpu_workers: need 0 <= min <= max"),
    ("name: e\ncluster: {image: 3}\n", "cluster.image must be a string"),
    ("name: 9lives\n", "is not a DNS-1035 label"),
    (f"name: {'x' * 48}\n", "at most 47"),
    ("- a list\n", "must be a YAML mapping"),
])
def test_bad_cluster_keys_name_key_and_file(tmp_path, text, fragment):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        render_file(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_search_needs_a_checkpoint(experiment):
    with pytest.raises(ValueError, match="needs --checkpoint"):
        render_file(experiment, job="search")


def test_cli_render_then_validate_round_trip(experiment, tmp_path, bare_env):
    out = tmp_path / "job.yaml"
    r = run_cli(["k8s", "render", "-c", str(experiment), "--overlay", "gpu", "-o", str(out)],
                bare_env, timeout=120)
    assert r.returncode == 0, r.stderr
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs] == ["ConfigMap", "RayJob"]
    v = run_cli(["k8s", "validate", str(out)], bare_env, timeout=120)
    assert v.returncode == 0 and "2 objects checked, 0 problems" in v.stderr
    stdout = run_cli(["k8s", "render", "-c", str(experiment)], bare_env, timeout=120)
    assert stdout.returncode == 0 and "kind: RayJob" in stdout.stdout
    bad = run_cli(["k8s", "render", "-c", str(tmp_path / "missing.yaml")], bare_env, timeout=120)
    assert bad.returncode == 2 and "missing.yaml does not exist" in bad.stderr
