"""`elukit compare --executor ray` on a real multi-node cluster (three raylets, started as Ray's own
tests start them, with `ray.cluster_utils.Cluster`), driven through the command line from another
working directory, with a worker node removed while it trains a configuration (issue 22).

The head node has no CPUs (it holds only the driver's writer actor); two worker nodes have one CPU
each, so each configuration trains on a worker node. A test hook makes the first worker to store
epoch 2 write its node id and wait; that node is then removed from the cluster, and Ray retries its
task on the other node, which resumes from the stored epoch. The rows must be the local run's."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from _store_rows import rows  # noqa: E402
from elukit.experiments import executors  # noqa: E402
from elukit.experiments.train import StudyConfig, run_study  # noqa: E402

CONFIG = StudyConfig(dataset="digits", activations=("relu", "elu"), seeds=2, epochs=3, width=16)
ARGS = ["--dataset", "digits", "--activations", "relu,elu", "--seeds", "2", "--epochs", "3", "--width", "16",
        "--threads", "1", "--quiet"]


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """Head (0 CPUs) and two 1-CPU worker nodes, started from a folder that is not the driver's."""
    cluster_cwd = tmp_path / "cluster-cwd"
    cluster_cwd.mkdir()
    monkeypatch.chdir(cluster_cwd)  # the raylets, and so the workers and actors, start here
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    monkeypatch.undo()
    try:
        yield cluster, nodes, cluster_cwd
    finally:
        cluster.shutdown()


def test_relative_out_on_a_cluster_with_a_node_removed_mid_study(cluster, tmp_path):
    cluster, nodes, cluster_cwd = cluster
    local = tmp_path / "local"
    store, _ = run_study(CONFIG, local, threads=1)
    store.close()
    driver_cwd = tmp_path / "driver"
    driver_cwd.mkdir()
    marker = tmp_path / "paused-node"
    env = {**os.environ, executors.TEST_PAUSE_AFTER_EPOCH: f"2:{marker}"}
    command = [sys.executable, "-m", "elukit.cli.app", "compare", *ARGS, "--executor", "ray",
               "--ray-address", cluster.address, "--out", "cluster"]
    driver = subprocess.Popen(command, cwd=driver_cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 300  # a hang, not a slow start: 120 s ran out once at load 5
        while not marker.exists() or len(marker.read_text()) < 56:  # a node id: 28 bytes in hex
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "no worker reached epoch 2"
            time.sleep(0.1)
        paused = marker.read_text()
        (node,) = [n for n in nodes if n.node_id == paused]  # a worker node, never the driver's (head)
        cluster.remove_node(node, allow_graceful=False)
        out, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 0, err
    assert "resuming after epoch 2 of 3" in err  # the removed node's configuration was retried elsewhere
    assert rows(driver_cwd / "cluster" / "results.db") == rows(local / "results.db")
    assert not (cluster_cwd / "cluster").exists()  # no second database in the cluster's working directory
    assert Path(driver_cwd / "cluster" / "report" / "report.html").is_file()
