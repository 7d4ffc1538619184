"""Run by test_multinode.py in its own process: a 4-node Ray cluster on this machine
(``ray.cluster_utils.Cluster``, real raylets), 2-worker pretraining spread over nodes, and a
worker node removed after the first checkpoint. Prints a JSON line with what happened."""

import json
import os
import sys
import threading
import time

import ray
import yaml
from ray.cluster_utils import Cluster

from augtrain.pipelines.train.checkpoint import latest_checkpoint, read_metadata
from augtrain.pipelines.train.config import parse_config
from augtrain.pipelines.train.pretrain import plan_pretraining, run_pretraining


def start_cluster(slot_nodes: int = 3) -> tuple[Cluster, list]:
    """A head (2 CPUs, no train worker) and ``slot_nodes`` nodes of one ``trainer_slot`` each
    (a worker per node), connected; returns the cluster and the slot nodes."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    slots = [cluster.add_node(num_cpus=1, resources={"trainer_slot": 1}) for _ in range(slot_nodes)]
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    return cluster, slots


def main(shards: str, out: str) -> None:
    cluster, slots = start_cluster()
    config = parse_config(yaml.safe_load(f"""
        name: multinode
        output: {out}
        data: {{train: {shards}, channels: 1}}
        augment: {{policy: mae, size: 8}}
        model: {{objective: simclr, encoder: cnn-tiny, encoder_kwargs: {{in_chans: 1, widths: [8, 16]}},
                 kwargs: {{proj_hidden_dim: 32, proj_dim: 16}}}}
        engine: {{zero_stage: 2, micro_batch_size: 25, base_lr: 1.0e-3}}
        loop: {{epochs: 2, checkpoint_every: 2, log_every: 2}}
        cluster: {{workers: 2, cpus_per_worker: 1, max_failures: 2, placement_strategy: SPREAD,
                   worker_resources: {{trainer_slot: 1}}}}
    """))
    plan = plan_pretraining(config)
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(run_pretraining(plan)))
    runner.start()
    removed = None
    while runner.is_alive() and removed is None:
        if latest_checkpoint(plan.loop.checkpoint_dir) is not None:
            per_node = ray._private.state.available_resources_per_node()
            for node in slots:
                if node.node_id in per_node and per_node[node.node_id].get("trainer_slot", 0) == 0:  # a worker is here
                    removed = {"node": node.node_id, "step": read_metadata(latest_checkpoint(plan.loop.checkpoint_dir))["step"]}
                    cluster.remove_node(node)
                    break
        time.sleep(0.2)
    runner.join()
    final = read_metadata(latest_checkpoint(plan.loop.checkpoint_dir))
    print(json.dumps({"removed": removed, "final_step": final["step"], "total_steps": plan.engine.total_steps,
                      "samples": final["data_position"]["samples_consumed"], "epoch": final["data_position"]["epoch"]}))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    os._exit(0)
