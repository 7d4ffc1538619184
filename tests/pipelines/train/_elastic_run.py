"""Run by test_elastic.py in its own process: a Ray cluster of a head and 3 one-worker nodes on
this machine (``ray.cluster_utils.Cluster``, real raylets), elastic pretraining with
``cluster.workers: [1, 3]``; after a checkpoint at 3 workers a worker's node is removed (the run
goes on at 2), and after a checkpoint at 2 a node is added back (Ray Train grows the group to 3).
Prints a JSON line with the world size of every checkpoint seen and the metrics rows."""

import csv
import json
import os
import sys
import threading
import time

import ray
import yaml

from augtrain.pipelines.train.checkpoint import latest_checkpoint, read_metadata
from augtrain.pipelines.train.config import parse_config
from augtrain.pipelines.train.pretrain import plan_pretraining, run_pretraining
from _multinode_run import start_cluster  # beside this script


def main(shards: str, out: str, epochs: int) -> None:
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "15"  # a start asked of a node just lost fails sooner
    cluster, slots = start_cluster()  # the head and 3 one-worker nodes of the node-loss test
    config = parse_config(yaml.safe_load(f"""
        name: elastic
        output: {out}
        data: {{train: {shards}, channels: 1}}
        augment: {{policy: mae, size: 16}}
        model: {{objective: mae, encoder: vit-micro, encoder_kwargs: {{in_chans: 1, image_size: 16, patch_size: 4}}}}
        engine: {{zero_stage: 2, precision: fp32, micro_batch_size: 25, global_batch_size: 150, base_lr: 1.0e-3}}
        loop: {{epochs: {epochs}, checkpoint_every: 2, log_every: 1, retention: {{keep_last: 1000}}}}
        cluster: {{workers: [1, 3], resize_interval_s: 2, cpus_per_worker: 1, max_failures: 3,
                   placement_strategy: SPREAD, worker_resources: {{trainer_slot: 1}}}}
    """))
    plan = plan_pretraining(config)
    result: dict = {}
    errors: list = []

    def run() -> None:
        try:
            result.update(run_pretraining(plan))
        except BaseException as exc:  # reported in the JSON line
            errors.append(repr(exc))

    runner = threading.Thread(target=run)
    runner.start()
    seen: dict[int, int] = {}  # checkpoint step -> world size
    events: list[dict] = []
    while runner.is_alive():
        latest = latest_checkpoint(plan.loop.checkpoint_dir)
        if latest is not None:
            meta = read_metadata(latest)
            seen.setdefault(meta["step"], meta["engine"]["world_size"])
            world = meta["engine"]["world_size"]
            if not events and world == 3:
                per_node = ray._private.state.available_resources_per_node()
                node = next(n for n in slots if n.node_id in per_node and per_node[n.node_id].get("trainer_slot", 0) == 0)
                events.append({"event": "removed", "after_step": meta["step"], "time": time.time()})
                cluster.remove_node(node)
            elif len(events) == 1 and world == 2:
                events.append({"event": "added", "after_step": meta["step"], "time": time.time()})
                cluster.add_node(num_cpus=1, resources={"trainer_slot": 1})
        time.sleep(0.2)
    runner.join()
    final = read_metadata(latest_checkpoint(plan.loop.checkpoint_dir))
    rows = []
    with open(os.path.join(plan.loop.metrics_dir, "metrics.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] in ("step", "epoch")]
    print(json.dumps({"errors": errors, "events": events, "worlds": sorted(seen.items()),
                      "final_step": final["step"], "total_steps": plan.engine.total_steps,
                      "global_batch": plan.engine.global_batch_size, "epoch": final["data_position"]["epoch"],
                      "rows": rows}))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    os._exit(0)
