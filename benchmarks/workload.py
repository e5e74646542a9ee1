"""A realistic stream of DataWorks events for the benchmark, and a paced publisher (its own process)."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

from airflow_provider_dataworks.local.emulator.publisher import build_envelope, encode, event_kind

# Instances the waiting triggers are for; noise uses other instance ids, so only the planted events match.
MATCH_BASE = 900_000_000
_NOISE_INSTANCES = (100_000_000, 199_999_999)
_WORKSPACES = (10001, 10002, 10003, 20001)
_TENANT = 28378


def instance_event(instance_id: int, *, status: int, rng: random.Random) -> bytes:
    """Return an ``instance-status-changes`` record as DataWorks writes it to the shared topic."""
    now = int(time.time() * 1000)
    workspace = rng.choice(_WORKSPACES)
    body: dict[str, Any] = {
        "taskId": instance_id,
        "nodeId": 700_000_000 + instance_id % 50_000,
        "dagId": 9_000_000_000 + instance_id % 1_000_000,
        "dagType": 0,
        "taskType": 0,
        "status": status,
        "appId": workspace,
        "tenantId": _TENANT,
        "opCode": 61 if status in (5, 6) else 31,
        "flowId": 1,
        "beginWaitTimeTime": now - 60_000,
        "beginWaitResTime": now - 30_000,
        "beginRunningTime": now - 20_000,
        "createTime": now - 3_600_000,
        "modifyTime": now,
    }
    if status in (5, 6):
        body["finishTime"] = now
    kind = event_kind("instance-status-changes")
    return encode(build_envelope("legacy", kind=kind, body=body, block_business=False))


def _file_event(rng: random.Random) -> bytes:
    workspace = rng.choice(_WORKSPACES)
    name = rng.choice(("ods_", "dwd_", "dws_", "ads_")) + rng.choice(("orders", "users", "items", "refunds"))
    body = {
        "fileId": rng.randint(1, 500_000),
        "fileName": name,
        "fileType": 10,
        "fileOwner": "20000001",
        "operator": "20000001",
        "fileCreateTime": "2026-01-05 10:00:00",
        "projectId": workspace,
        "tenantId": _TENANT,
        "blockBusiness": False,
        "resourceType": 1,
        "changeType": "1",
        "fileVersion": rng.randint(1, 40),
        "dataSourceName": "odps_first",
        "nodeId": 700_000_000 + rng.randint(1, 50_000),
    }
    code = rng.choice(("commit-file", "deploy-file"))
    return encode(build_envelope("legacy", kind=event_kind(code), body=body, block_business=False))


def _table_event(rng: random.Random) -> bytes:
    body = {
        "operator": "20000001",
        "projectId": rng.choice(_WORKSPACES),
        "tenantId": _TENANT,
        "extensionBizId": f"ext-biz-{uuid.uuid4().hex[:12]}",
        "tableName": rng.choice(("ods_", "dim_", "dwd_")) + rng.choice(("orders", "users", "items")),
        "tableType": "ODPS",
        "maxComputeProject": "dw_prod",
    }
    kind = event_kind(rng.choice(("commit-table", "deploy-table")))
    return encode(build_envelope("legacy", kind=kind, body=body, block_business=True))


def noise_event(rng: random.Random) -> bytes:
    """Return an event no benchmark trigger waits for: mostly instance changes, some file and table events."""
    draw = rng.random()
    if draw < 0.85:
        return instance_event(rng.randint(*_NOISE_INSTANCES), status=rng.choice((2, 3, 4, 4, 6)), rng=rng)
    if draw < 0.95:
        return _file_event(rng)
    return _table_event(rng)


def match_event(slot: int, rng: random.Random) -> bytes:
    """Return the success event that the trigger of ``slot`` waits for."""
    return instance_event(MATCH_BASE + slot, status=6, rng=rng)


def producer_config(bootstrap: str) -> dict[str, Any]:
    """Return the producer settings of the benchmark: small batches, as a live event source sends them."""
    return {
        "bootstrap.servers": bootstrap,
        "linger.ms": 2,
        "acks": 1,
        "queue.buffering.max.messages": 1_000_000,
    }


def prefill(bootstrap: str, topic: str, *, count: int, matches: int, seed: int = 1) -> None:
    """Write ``count`` noise events, then the match of every slot in ``range(matches)``, and wait for them."""
    from confluent_kafka import Producer

    rng = random.Random(seed)
    producer = Producer({**producer_config(bootstrap), "linger.ms": 20})
    for index in range(count):
        producer.produce(topic, value=noise_event(rng))
        if index % 10_000 == 0:
            producer.poll(0)
    for slot in range(matches):
        producer.produce(topic, value=match_event(slot, rng))
    if producer.flush(120):
        raise RuntimeError(f"Kafka did not take all {count + matches} records for {topic!r} within 120 s")


def read_through(bootstrap: str, topic: str, *, timeout: float = 120) -> int:
    """Read ``topic`` to its end once with a plain consumer, warming the broker's fetch path."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-warm-up", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        positions = dict.fromkeys(partitions, 0)
        deadline = time.monotonic() + timeout
        while any(positions[p] < ends[p] for p in partitions) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                if message.error() is None:
                    positions[message.partition()] = message.offset() + 1
        return sum(positions.values())
    finally:
        consumer.close()


def _schedule(rate: float, seconds: float, matches: int) -> Iterator[tuple[float, int | None]]:
    """Yield ``(send time, slot or None)``: noise at ``rate`` per second, one match per slot in between."""
    total = int(rate * seconds)
    match_at = {int(total * (0.1 + 0.8 * slot / max(1, matches))): slot for slot in range(matches)}
    for index in range(total):
        yield index / rate, match_at.get(index)


def publish_live(
    bootstrap: str, topic: str, *, rate: float, seconds: float, matches: int, seed: int = 2
) -> int:
    """Publish ``rate`` events per second for ``seconds`` with one match per slot; return how many."""
    from confluent_kafka import Producer

    rng = random.Random(seed)
    producer = Producer(producer_config(bootstrap))
    started = time.monotonic()
    sent = 0
    planted = set()
    for at, slot in _schedule(rate, seconds, matches):
        delay = started + at - time.monotonic()
        if delay > 0:
            producer.poll(0)
            time.sleep(delay)  # pacing the event source, not waiting for a condition
        if slot is None:
            producer.produce(topic, value=noise_event(rng))
        else:
            planted.add(slot)
            producer.produce(topic, value=match_event(slot, rng))
        sent += 1
    for slot in range(matches):
        if slot not in planted:
            producer.produce(topic, value=match_event(slot, rng))
            sent += 1
    if producer.flush(30):
        raise RuntimeError(f"Kafka did not take the live records for {topic!r} within 30 s")
    return sent


def main(argv: list[str] | None = None) -> int:
    """Entry point of the publisher process: ``python -m benchmarks.workload BOOTSTRAP TOPIC ...``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--matches", type=int, required=True)
    args = parser.parse_args(argv)
    sent = publish_live(
        args.bootstrap, args.topic, rate=args.rate, seconds=args.seconds, matches=args.matches
    )
    print(json.dumps({"sent": sent}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
