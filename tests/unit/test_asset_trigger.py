"""The asset-watcher trigger and the common.messaging queue provider, without a broker."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.sdk import Asset, AssetWatcher
from airflow.sdk.serde import deserialize, serialize
from airflow.triggers.base import BaseEventTrigger

from airflow_provider_dataworks.exceptions import DataWorksConnectionConfigError
from airflow_provider_dataworks.triggers.asset import DataWorksAssetEventTrigger
from airflow_provider_dataworks.triggers.event import DataWorksEventTrigger

CLASSPATH = "airflow_provider_dataworks.triggers.asset.DataWorksAssetEventTrigger"
EXAMPLE_DAG = Path(__file__).resolve().parents[2] / "example_dags" / "example_dataworks_event_driven.py"


def test_asset_trigger_serialize_is_plain_json_and_sorted():
    trigger = DataWorksAssetEventTrigger(
        dataworks_conn_id="dw",
        event_filter={"file_names": ["ods_*"], "workspace_ids": [3, 1], "event_types": ["deploy-file"]},
        consumer_group="airflow-assets",
    )

    classpath, kwargs = trigger.serialize()

    assert classpath == CLASSPATH
    assert kwargs == {
        "dataworks_conn_id": "dw",
        "event_filter": {"event_types": ["deploy-file"], "file_names": ["ods_*"], "workspace_ids": [1, 3]},
        "topic": None,
        "consumer_group": "airflow-assets",
    }
    assert json.loads(json.dumps(kwargs)) == kwargs


def test_asset_trigger_written_two_ways_hashes_the_same_so_the_watcher_is_not_recreated():
    one = DataWorksAssetEventTrigger(event_filter={"workspace_ids": [2, 1], "event_types": "deploy-file"})
    other = DataWorksAssetEventTrigger(
        event_filter={"event_types": ["dataworks:FileChange:DeployFile"], "workspace_ids": [1, 2, 2]}
    )

    assert BaseEventTrigger.hash(*one.serialize()) == BaseEventTrigger.hash(*other.serialize())


def test_asset_trigger_round_trips_through_airflow_serde():
    _, kwargs = DataWorksAssetEventTrigger(event_filter={"table_names": ["ods_*"]}, topic="t").serialize()

    rebuilt = DataWorksAssetEventTrigger(**deserialize(serialize(kwargs)))

    assert rebuilt.serialize()[1] == kwargs


def test_watchers_share_a_stream_only_with_the_same_connection_topic_and_group():
    key = DataWorksAssetEventTrigger(event_filter={"node_ids": [1]}).shared_stream_key()

    assert DataWorksAssetEventTrigger(event_filter={"node_ids": [2]}).shared_stream_key() == key
    assert DataWorksAssetEventTrigger(consumer_group="g").shared_stream_key() != key
    assert DataWorksAssetEventTrigger(topic="t").shared_stream_key() != key
    assert DataWorksAssetEventTrigger(dataworks_conn_id="other").shared_stream_key() != key
    hash(key)


def test_asset_watcher_accepts_the_asset_trigger_and_refuses_the_sensor_trigger():
    trigger = DataWorksAssetEventTrigger(event_filter={"event_types": ["deploy-file"]})

    Asset("ods_deploys", watchers=[AssetWatcher(name="ods_deploys", trigger=trigger)])
    with pytest.raises((TypeError, ValueError)):
        AssetWatcher(name="sensor", trigger=DataWorksEventTrigger())


async def test_asset_trigger_run_outside_the_shared_stream_names_what_to_use():
    with pytest.raises(DataWorksConnectionConfigError, match="DataWorksEventSensor"):
        async for _ in DataWorksAssetEventTrigger().run():
            pass


def test_message_queue_trigger_with_dataworks_scheme_stores_the_asset_trigger():
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    trigger = MessageQueueTrigger(
        scheme="dataworks", dataworks_conn_id="dw", event_filter={"table_names": ["ods_*"]}
    )

    assert trigger.serialize() == (
        CLASSPATH,
        {
            "dataworks_conn_id": "dw",
            "event_filter": {"table_names": ["ods_*"]},
            "topic": None,
            "consumer_group": None,
        },
    )
    assert isinstance(trigger.trigger, DataWorksAssetEventTrigger)


def test_queue_provider_module_imports_neither_kafka_nor_the_trigger():
    code = (
        "import sys, airflow_provider_dataworks.queues.dataworks as q; "
        "q.DataWorksMessageQueueProvider(); "
        "ours = ('confluent_kafka', 'airflow_provider_dataworks'); "
        "print(sorted(m for m in sys.modules if m.startswith(ours)))"
    )

    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )

    assert loaded.stdout.strip() == str(
        [
            "airflow_provider_dataworks",
            "airflow_provider_dataworks.queues",
            "airflow_provider_dataworks.queues.dataworks",
        ]
    )


def test_provider_info_registers_the_queue_provider_and_the_asset_trigger():
    from airflow_provider_dataworks import get_provider_info

    info = get_provider_info()

    assert "airflow_provider_dataworks.queues.dataworks.DataWorksMessageQueueProvider" in info["queues"]
    modules = [module for entry in info["triggers"] for module in entry["python-modules"]]
    assert "airflow_provider_dataworks.triggers.asset" in modules


def test_example_dag_watchers_are_asset_triggers_whose_kwargs_do_not_change_between_parses():
    def watchers() -> dict[str, tuple[str, dict]]:
        module = runpy.run_path(str(EXAMPLE_DAG))
        assets = [module["ods_file_deploys"], module["ods_table_commits"]]
        return {w.name: w.trigger.serialize() for asset in assets for w in asset.watchers}

    first, second = watchers(), watchers()

    assert first == second
    assert {classpath for classpath, _ in first.values()} == {CLASSPATH}
    assert first["dataworks_ods_file_deploys"][1]["event_filter"] == {
        "event_types": ["deploy-file"],
        "file_names": ["ods_*"],
        "workspace_ids": [10001],
    }
