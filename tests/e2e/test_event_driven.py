"""The event-driven example DAG on a real scheduler, dag-processor, triggerer and api-server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

from airflow_provider_dataworks.local.emulator.publisher import build_envelope, encode, event_kind
from airflow_provider_dataworks.local.stack import build_connection
from tests.e2e.airflow_cluster import AirflowCluster, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "example_dags" / "example_dataworks_event_driven.py"
DAG_ID = "example_dataworks_event_driven"
WORKSPACE = 10001


def _file_deploy(file_name: str, *, workspace: int = WORKSPACE, message_id: str | None = None) -> bytes:
    body = {"fileId": 501, "fileName": file_name, "projectId": workspace, "tenantId": 1, "operator": "u1"}
    kind = event_kind("deploy-file")
    return encode(build_envelope("legacy", kind=kind, body=body, block_business=False, message_id=message_id))


def _table_commit(table_name: str, *, message_id: str | None = None) -> bytes:
    body = {"tableName": table_name, "projectId": WORKSPACE, "tenantId": 1, "operator": "u1"}
    kind = event_kind("commit-table")
    return encode(build_envelope("legacy", kind=kind, body=body, block_business=True, message_id=message_id))


def _retriable(error: BaseException) -> bool:
    # The group coordinator moves or loads now and then; asking again is the documented answer.
    return isinstance(error, KafkaException) and error.args[0].retriable()


class _World:
    """The Kafka side of the test: publishing events and reading the consumer group's state."""

    def __init__(self, broker, topic: str, group: str) -> None:
        self.topic = topic
        self.group = group
        self._config = broker.plaintext_config()
        self._producer = Producer(self._config)

    def publish(self, *values: bytes) -> None:
        for value in values:
            self._producer.produce(self.topic, value=value, partition=0)
        assert self._producer.flush(10) == 0

    @retry(
        retry=retry_if_exception(_retriable), stop=stop_after_delay(30), wait=wait_fixed(0.2), reraise=True
    )
    def committed(self) -> dict[int, int]:
        consumer = Consumer({**self._config, "group.id": self.group, "enable.auto.commit": False})
        try:
            offsets = consumer.committed([TopicPartition(self.topic, p) for p in range(3)], timeout=10)
        finally:
            consumer.close()
        return {tp.partition: tp.offset for tp in offsets}

    def end_offset(self) -> int:
        consumer = Consumer({**self._config, "group.id": f"{self.group}-probe"})
        try:
            return consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=10)[1]
        finally:
            consumer.close()

    def members(self) -> int:
        admin = AdminClient(self._config)
        [future] = admin.describe_consumer_groups([self.group], request_timeout=10).values()
        return len(future.result().members)


@pytest.fixture
def cluster(tmp_path, kafka_broker, unique_topic, unique_group) -> Iterator[AirflowCluster]:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / EXAMPLE.name).symlink_to(EXAMPLE)
    connection = build_connection(
        broker=kafka_broker, listener="sasl_ssl", topic=unique_topic, consumer_group=unique_group
    )
    env = {
        "AIRFLOW_CONN_DATAWORKS_DEFAULT": json.dumps(connection),
        "DATAWORKS_EXAMPLE_WORKSPACE_ID": str(WORKSPACE),
    }
    airflow = AirflowCluster(home=tmp_path / "airflow", dags_folder=dags, env=env)
    with airflow:
        yield airflow


def _runs(cluster: AirflowCluster) -> list[dict]:
    runs = cluster.api(f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100&order_by=run_after")["dag_runs"]
    return runs


def _asset_event_message_ids(cluster: AirflowCluster) -> list[str]:
    events = cluster.api(
        "/api/v2/assets/events?limit=100&order_by=timestamp&name_prefix_pattern=dataworks_ods"
    )
    return [event["extra"]["payload"]["event"]["message_id"] for event in events["asset_events"]]


def _wait_for_runs(cluster: AirflowCluster, count: int) -> list[dict]:
    def finished() -> list[dict] | None:
        runs = _runs(cluster)
        assert len(runs) <= count, f"more DAG runs than events: {runs}"
        done = len(runs) == count and all(run["state"] in ("success", "failed") for run in runs)
        return runs if done else None

    return wait_for(finished, timeout=150, what=f"{count} finished DAG runs", cluster=cluster)


def test_example_dag_runs_once_per_matching_event_across_a_triggerer_restart(
    cluster, kafka_broker, unique_topic, unique_group
):
    world = _World(kafka_broker, unique_topic, unique_group)
    wait_for(
        lambda: all(offset >= 0 for offset in world.committed().values()),
        timeout=180,
        what="the triggerer's watchers to join the consumer group",
        cluster=cluster,
    )
    assert world.members() == 1  # both watchers of the DAG share one consumer

    first_deploy, first_table, second_table, outage_deploy, last_table = (str(uuid.uuid4()) for _ in range(5))
    world.publish(
        _file_deploy("ods_orders", message_id=first_deploy),
        _file_deploy("ods_orders", workspace=10002),
        _file_deploy("dwd_orders"),
        _table_commit("dim_users"),
    )
    _wait_for_runs(cluster, 1)

    world.publish(_table_commit("ods_users", message_id=first_table))
    _wait_for_runs(cluster, 2)

    world.publish(
        _file_deploy("ods_orders", message_id=first_deploy),  # DataWorks delivering the first deploy again
        _table_commit("ods_items", message_id=second_table),
    )
    _wait_for_runs(cluster, 3)
    end = world.end_offset()
    wait_for(lambda: world.committed()[0] == end, timeout=60, what="the commit of every stored event")

    cluster.stop_component("triggerer")
    world.publish(_file_deploy("ods_refunds", message_id=outage_deploy))
    cluster.start_component("triggerer")
    _wait_for_runs(cluster, 4)
    world.publish(_table_commit("ods_returns", message_id=last_table))
    runs = _wait_for_runs(cluster, 5)

    assert _asset_event_message_ids(cluster) == [
        first_deploy,
        first_table,
        second_table,
        outage_deploy,
        last_table,
    ]
    assert [run["state"] for run in runs] == ["success"] * 5
    assert [run["run_type"] for run in runs] == ["asset_triggered"] * 5
