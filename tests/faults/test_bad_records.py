"""Records that are no DataWorks event: skipped with one warning each, and the match still fires."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import pytest

from airflow_provider_dataworks.events import MAX_EVENT_BYTES
from airflow_provider_dataworks.sensors.event import DataWorksEventSensor
from airflow_provider_dataworks.triggers.event import DataWorksEventTrigger
from tests.faults.conftest import NODE, Publisher, create_topic, first_payload, instance_event, until
from tests.faults.predicates import EXPLODING_NODE

pytestmark = pytest.mark.integration

FIVE_MB = 5 * 1024 * 1024
TOPIC_LIMIT = {"max.message.bytes": str(8 * 1024 * 1024)}
PRODUCER_LIMIT = {"message.max.bytes": 8 * 1024 * 1024}


def _bad_records() -> dict[str, bytes | None]:
    """One record of every kind that is not a DataWorks event, by the reason the reader gives."""
    padded_match = json.loads(instance_event(node=NODE))
    padded_match["messageBody"]["padding"] = "x" * FIVE_MB
    return {
        "not UTF-8 JSON": b"this is not json",
        "no value (a tombstone)": None,
        "not an object (a list)": b"[1, 2, 3]",
        f"more than the {MAX_EVENT_BYTES}": json.dumps(padded_match).encode(),
        "not a DataWorks envelope": json.dumps({"hello": "world", "id": 1}).encode(),
        "not strict JSON (it holds NaN)": b'{"messageId": "1", "eventType": "x", "messageBody": {"t": NaN}}',
        "nested too deeply": b"[" * 100_000 + b"]" * 100_000,
    }


def _malformed_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipping malformed record")]


@pytest.fixture
def big_topic(kafka_broker, request) -> str:
    name = f"faults-big-{uuid.uuid4().hex[:8]}"
    return create_topic(kafka_broker, name, partitions=1, **TOPIC_LIMIT)


async def test_trigger_when_bad_records_precede_the_match_warns_once_per_record_and_fires(
    kafka_broker, big_topic, dataworks_conn, caplog, no_stream_left
):
    conn_id = dataworks_conn(listener="sasl_ssl", topic=big_topic)
    publisher = Publisher(kafka_broker, big_topic, **PRODUCER_LIMIT)
    bad = _bad_records()
    start_ms = int(time.time() * 1000)
    publisher.send(*bad.values(), instance_event(node=NODE, message_id="the-match"))

    with caplog.at_level(logging.WARNING):
        payload = await first_payload(
            DataWorksEventTrigger(
                dataworks_conn_id=conn_id, event_filter={"node_ids": [NODE]}, start_time=start_ms
            )
        )

    assert payload["status"] == "matched"
    assert payload["event"]["message_id"] == "the-match"
    assert payload["record"]["offset"] == len(bad)
    warnings = _malformed_warnings(caplog)
    assert len(warnings) == len(bad), warnings
    for offset, (reason, warning) in enumerate(zip(bad, warnings, strict=True)):
        assert warning.startswith(
            f"Skipping malformed record at topic {big_topic} partition 0 offset {offset}: "
        )
        assert reason in warning
    assert all(len(warning) < 500 for warning in warnings), "a warning quoted a whole record"


async def test_triggers_whose_readers_overlap_warn_once_per_bad_record(
    publisher, unique_topic, dataworks_conn, caplog, no_stream_left
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    base = int(time.time() * 1000) - 60_000
    publisher.send(b"early garbage", timestamp=base + 1_000)
    publisher.send(b"late garbage", timestamp=base + 2_000)

    with caplog.at_level(logging.WARNING):
        # The first trigger's shared reader starts at the late garbage; the second trigger starts
        # earlier, so its catch-up reader reads the late garbage again.
        late = asyncio.ensure_future(
            first_payload(
                DataWorksEventTrigger(
                    dataworks_conn_id=conn_id, event_filter={"instance_ids": [1]}, start_time=base + 2_000
                )
            )
        )
        await until(
            lambda: _malformed_warnings(caplog),
            timeout=30,
            message="the shared reader never read the garbage",
        )
        early = asyncio.ensure_future(
            first_payload(
                DataWorksEventTrigger(
                    dataworks_conn_id=conn_id, event_filter={"instance_ids": [2]}, start_time=base
                )
            )
        )
        await until(
            lambda: len(_malformed_warnings(caplog)) >= 2, timeout=30, message="the garbage was never read"
        )
        publisher.send(instance_event(instance=1), instance_event(instance=2))
        await asyncio.gather(late, early)

    assert [w.split(":")[0] for w in _malformed_warnings(caplog)] == [
        f"Skipping malformed record at topic {unique_topic} partition 0 offset 1",
        f"Skipping malformed record at topic {unique_topic} partition 0 offset 0",
    ]


async def test_predicate_that_raises_on_one_event_spares_the_other_triggers_of_the_stream(
    publisher, unique_topic, dataworks_conn, caplog, no_stream_left
):
    conn_id = dataworks_conn(listener="plaintext", topic=unique_topic)
    start_ms = int(time.time() * 1000)
    fragile = asyncio.ensure_future(
        first_payload(
            DataWorksEventTrigger(
                dataworks_conn_id=conn_id,
                event_filter={"predicate": "tests.faults.predicates.explode_on_one_node"},
                start_time=start_ms,
            )
        )
    )
    sturdy = asyncio.ensure_future(
        first_payload(
            DataWorksEventTrigger(
                dataworks_conn_id=conn_id, event_filter={"node_ids": [EXPLODING_NODE]}, start_time=start_ms
            )
        )
    )

    with caplog.at_level(logging.WARNING):
        publisher.send(instance_event(node=EXPLODING_NODE, message_id="explosive"))
        assert (await sturdy)["event"]["message_id"] == "explosive"
        assert not fragile.done()
        publisher.send(instance_event(node=NODE, message_id="harmless"))
        assert (await fragile)["event"]["message_id"] == "harmless"

    [warning] = [r.getMessage() for r in caplog.records if "predicate" in r.getMessage()]
    assert "tests.faults.predicates.explode_on_one_node raised RuntimeError on event explosive" in warning


def test_poke_when_bad_records_precede_the_match_warns_once_per_record_and_returns_it(
    kafka_broker, big_topic, dataworks_conn, caplog
):
    conn_id = dataworks_conn(listener="plaintext", topic=big_topic)
    publisher = Publisher(kafka_broker, big_topic, **PRODUCER_LIMIT)
    bad = _bad_records()
    sensor = DataWorksEventSensor(
        task_id="wait",
        dataworks_conn_id=conn_id,
        node_ids=[NODE],
        start_time=int(time.time() * 1000),
        deferrable=False,
    )
    assert not sensor.poke({}).is_done

    publisher.send(*bad.values(), instance_event(node=NODE, message_id="the-match"))
    with caplog.at_level(logging.WARNING):
        result = sensor.poke({})

    assert result.is_done
    assert result.xcom_value["event"]["message_id"] == "the-match"
    assert len(_malformed_warnings(caplog)) == len(bad)
