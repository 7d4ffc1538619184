"""``augtrain k8s render``: a RayJob (+ ConfigMap) per experiment that validates, for every
overlay and job kind, sized from the experiment's ``cluster:`` keys; bad keys name key and file."""

from __future__ import annotations

import pytest
import yaml

from augtrain.cluster.k8s.render import JOBS, OVERLAYS, RenderOptions, render_file
from augtrain.cluster.k8s.validate import validate_objects
from conftest import REPO, run_cli

QUICKSTART = REPO / "configs" / "quickstart-simclr.yaml"  # a real experiment file
EXPERIMENT = """\
name: MAE_digits
data: {train: s3://bucket/digits/train}
model: {objective: mae, encoder: vit-tiny}
cluster:
  workers: 6
  cpus_per_worker: 4
  image: registry.example.com/augtrain:0.1.0
"""


@pytest.fixture
def experiment(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT)
    return path


def groups_of(rayjob: dict) -> dict:
    return {g["groupName"]: g for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]}


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda o: f"overlay-{o}")
@pytest.mark.parametrize("job", JOBS)
def test_every_rendered_rayjob_validates(experiment, overlay, job):
    objects = render_file(experiment, overlay=overlay, job=job, checkpoint="/mnt/augtrain/runs/x/ckpt")
    assert [o["kind"] for o in objects] == ["ConfigMap", "RayJob"]
    assert validate_objects(objects, str(experiment)) == []
    config_map, rayjob = objects
    assert config_map["data"]["config.yaml"] == EXPERIMENT
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] == 1
    assert spec["entrypoint"].startswith(f"augtrain {job} -c /etc/augtrain/config.yaml")
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert head["volumes"][-1]["configMap"] == {"name": config_map["metadata"]["name"]}
    assert head["containers"][0]["image"] == "registry.example.com/augtrain:0.1.0"


def test_groups_are_sized_from_the_training_workers(experiment):
    # 6 workers x 4 CPUs = 24 CPUs = 3 pods of 8, plus 1 spare pod for Ray Data
    cpu = groups_of(render_file(experiment, overlay="cpu")[1])
    assert list(cpu) == ["cpu"] and (cpu["cpu"]["minReplicas"], cpu["cpu"]["maxReplicas"]) == (0, 4)
    gpu = groups_of(render_file(experiment, overlay="gpu")[1])
    assert gpu["gpu"]["maxReplicas"] == 6 and gpu["cpu"]["maxReplicas"] == 1
    limits = gpu["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"}
    assert gpu["gpu"]["idleTimeoutSeconds"] == 300 and gpu["cpu"]["idleTimeoutSeconds"] == 120
    small = RenderOptions(worker_cpus=16, worker_memory="48Gi", spare_cpu_workers=2, idle_timeout_s=30)
    cpu = groups_of(render_file(experiment, overlay="cpu", options=small)[1])["cpu"]
    assert cpu["maxReplicas"] == 2 + 2 and cpu["idleTimeoutSeconds"] == 30
    assert cpu["template"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "16", "memory": "48Gi"}


def test_an_elastic_range_is_sized_for_its_most_workers(tmp_path):
    path = tmp_path / "elastic.yaml"
    path.write_text(EXPERIMENT.replace("workers: 6", "workers: [2, 6]"))
    gpu = groups_of(render_file(path, overlay="gpu")[1])
    assert gpu["gpu"]["maxReplicas"] == 6  # as for 6 fixed workers
    path.write_text(EXPERIMENT.replace("workers: 6", "workers: [6, 2]"))
    with pytest.raises(ValueError, match=r"cluster.workers \[MIN, MAX\] needs two whole numbers, 1 <= MIN <= MAX"):
        render_file(path, overlay="gpu")


def test_pretrain_writes_to_the_shared_volume_and_resumes(experiment):
    pre, search = render_file(experiment)[1], render_file(experiment, job="search", checkpoint="/c")[1]
    assert pre["metadata"]["name"] == "mae-digits" and search["metadata"]["name"] == "mae-digits-search"
    assert pre["spec"]["entrypoint"] == ("augtrain pretrain -c /etc/augtrain/config.yaml "
                                         "--set output=/mnt/augtrain/runs/mae-digits --resume latest")
    assert search["spec"]["entrypoint"].endswith("--checkpoint /c --resume")
    assert "--set output=/mnt/augtrain/runs/mae-digits" in search["spec"]["entrypoint"]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda o: f"overlay-{o}")  # a bare "gpu" id marks a GPU-only test
def test_the_quickstart_experiment_renders(overlay):
    objects = render_file(QUICKSTART, overlay=overlay)
    assert validate_objects(objects, str(QUICKSTART)) == []
    head = objects[1]["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["image"] == f"augtrain:0.1.0-{overlay}"


@pytest.mark.parametrize("text,overlay,fragment", [
    ("data: {}\n", "cpu", "missing key name"),
    ("name: e\ncluster: {workers: two}\n", "cpu", "cluster.workers must be int or list, got 'two'"),
    ("name: e\ncluster: {workers: true}\n", "cpu", "cluster.workers must be int"),
    ("name: e\ncluster: {workers: 0}\n", "cpu", "cluster.workers must be >= 1"),
    ("name: e\ncluster: {image: 3}\n", "cpu", "cluster.image must be str"),
    ("name: e\ncluster: {use_gpu: true}\n", "cpu", "render it with --overlay gpu"),
    ("name: e\ncluster: {use_gpu: false}\n", "gpu", "GPU nodes the run never uses"),
    ("name: e\ncluster: {cpus_per_worker: 12}\n", "cpu", "does not fit in a worker pod of 8 CPUs"),
    ("name: e\ncluster: [1]\n", "cpu", "cluster must be a mapping"),
    ("name: 9lives\n", "cpu", "is not a DNS-1035 label"),
    (f"name: {'x' * 48}\n", "cpu", "at most 47"),
    ("- a list\n", "cpu", "must be a YAML mapping"),
])
def test_bad_keys_name_key_and_file(tmp_path, text, overlay, fragment):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        render_file(path, overlay=overlay)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_search_defaults_to_the_experiments_pretraining_checkpoints(experiment):
    search = render_file(experiment, job="search")[1]["spec"]["entrypoint"]
    assert search == ("augtrain search -c /etc/augtrain/config.yaml --set output=/mnt/augtrain/runs/"
                      "mae-digits --checkpoint /mnt/augtrain/runs/mae-digits/checkpoints --resume")


def test_cli_render_then_validate_round_trip(tmp_path, bare_env):
    out = tmp_path / "job.yaml"
    r = run_cli(["k8s", "render", "-c", str(QUICKSTART), "--overlay", "gpu", "--gpu-worker-cpus",
                 "16", "-o", str(out)], bare_env, timeout=180)
    assert r.returncode == 0, r.stderr
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs] == ["ConfigMap", "RayJob"]
    assert groups_of(docs[1])["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "16"
    v = run_cli(["k8s", "validate", str(out)], bare_env, timeout=120)
    assert v.returncode == 0 and "2 objects checked, 0 problems" in v.stderr
    missing = run_cli(["k8s", "render", "-c", str(tmp_path / "missing.yaml")], bare_env, timeout=120)
    assert missing.returncode == 2 and "missing.yaml does not exist" in missing.stderr


def test_cli_render_runs_the_pretrain_validator(tmp_path, bare_env):
    bad = tmp_path / "bad.yaml"
    bad.write_text(QUICKSTART.read_text().replace("loop:\n", "loop:\n  epochz: 3\n"))
    r = run_cli(["k8s", "render", "-c", str(bad)], bare_env, timeout=180)
    assert r.returncode == 2 and "epochz" in r.stderr and str(bad) in r.stderr


def test_cli_render_search_runs_the_search_validator(tmp_path, bare_env):
    search = REPO / "configs" / "search-fmnist.yaml"
    ok = run_cli(["k8s", "render", "-c", str(search), "--job", "search"], bare_env, timeout=180)
    assert ok.returncode == 0, ok.stderr
    assert "--checkpoint /mnt/augtrain/runs/" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(search.read_text().replace("search:\n", "search:\n  bogus_key: 1\n"))
    r = run_cli(["k8s", "render", "-c", str(bad), "--job", "search"], bare_env, timeout=180)
    assert r.returncode == 2 and "search.bogus_key" in r.stderr and str(bad) in r.stderr
