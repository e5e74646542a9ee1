"""One measurement in a process of its own: N waiting triggers of one kind, run as the triggerer runs them."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from benchmarks.workload import MATCH_BASE

IMPLEMENTATIONS = ("dataworks", "kafka-default", "kafka-fast")
DATAWORKS_CONN_ID = "bench_dataworks"
READY_LINE = "LIVE-READY"
RESULT_PREFIX = "RESULT "

# Librdkafka prefetches up to 64 MB per consumer by default; one AwaitMessageTrigger is one consumer,
# and a hundred of them reading a backlog would hold gigabytes. Capped so the comparison fits in memory.
_KAFKA_PREFETCH_KBYTES = 4096


@dataclass
class Phase:
    """What one phase measured."""

    fired: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    records_per_trigger: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    capped: bool = False


@dataclass
class Measurement:
    """Everything one scenario process measured."""

    implementation: str
    waiting: int
    backlog: Phase | None = None
    live: Phase | None = None
    rss_before_mb: float = 0.0
    rss_one_mb: float = 0.0
    rss_waiting_mb: float = 0.0
    growth_per_trigger_kb: float | None = None
    kafka_connections: int = 0


class _Runner:
    """N triggers of one implementation as asyncio tasks in this process's event loop."""

    def __init__(self, implementation: str, *, bootstrap: str, topic: str, start_ms: int) -> None:
        self.implementation = implementation
        self.bootstrap = bootstrap
        self.topic = topic
        self.start_ms = start_ms
        self.latencies: list[float] = []
        self.triggers: dict[int, Any] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.all_fired = asyncio.Event()
        self.expected = 0
        self._run_id = uuid.uuid4().hex[:8]

    def start(self, slots: range) -> None:
        self.expected += len(slots)
        for slot in slots:
            trigger = self._trigger(slot, self.start_ms)
            self.triggers[slot] = trigger
            self.tasks[slot] = asyncio.ensure_future(self._first_event(slot, trigger))

    def _trigger(self, slot: int, start_ms: int) -> Any:
        if self.implementation == "dataworks":
            from airflow_provider_dataworks.triggers.event import DataWorksEventTrigger

            return DataWorksEventTrigger(
                dataworks_conn_id=DATAWORKS_CONN_ID,
                topic=self.topic,
                event_filter={"instance_ids": [MATCH_BASE + slot]},
                start_time=start_ms,
            )

        from airflow.providers.apache.kafka.triggers.await_message import AwaitMessageTrigger

        # Every AwaitMessageTrigger needs a consumer group of its own: triggers sharing one would split
        # the partitions, and each would commit past the others' events.
        conn_id = f"bench_kafka_{self._run_id}_{slot}"
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
            {
                "conn_type": "kafka",
                "extra": {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": conn_id,
                    "auto.offset.reset": "earliest",
                    "queued.max.messages.kbytes": _KAFKA_PREFETCH_KBYTES,
                },
            }
        )
        return AwaitMessageTrigger(
            topics=[self.topic],
            apply_function="benchmarks.kafka_apply.match_instance",
            apply_function_kwargs={"instance_id": MATCH_BASE + slot},
            kafka_config_id=conn_id,
            poll_interval=5 if self.implementation == "kafka-default" else 0,
        )

    async def _first_event(self, slot: int, trigger: Any) -> int | None:
        """Run ``trigger`` until it fires; record the latency and return the event's record timestamp."""
        try:
            async for event in trigger.run():
                fired_ms = time.time() * 1000
                payload = event.payload
                if payload.get("status") == "error":
                    print(f"trigger {slot} failed: {payload['message']}", file=sys.stderr, flush=True)
                    return None
                published = payload["record"]["timestamp"] if "record" in payload else payload["timestamp"]
                self.latencies.append(fired_ms - published)
                return int(published)
        except Exception as error:
            print(f"trigger {slot} raised {error!r}", file=sys.stderr, flush=True)
        finally:
            await trigger.cleanup()
            if len(self.latencies) >= self.expected:
                self.all_fired.set()
        return None

    def ready(self) -> bool:
        """Whether every started trigger reads the topic."""
        if self.implementation == "dataworks":
            from airflow_provider_dataworks.triggers.stream import active_streams

            streams = [s for (_, topic), s in active_streams().items() if topic == self.topic]
            return bool(streams) and streams[0].subscriber_count == len(self.tasks)
        # Each AwaitMessageTrigger makes its consumer first thing; joining its group takes one poll
        # per trigger on the one thread they share, which is part of what is measured.
        return all(getattr(trigger, "_consumer", None) is not None for trigger in self.triggers.values())


async def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _wait_for_event(event: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


def _cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def _rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 1_048_576


async def _sample_connections(port: int, measurement: Measurement) -> None:
    while True:
        measurement.kafka_connections = max(measurement.kafka_connections, _kafka_connections(port))
        await asyncio.sleep(0.2)


def _kafka_connections(port: int) -> int:
    return sum(
        1
        for connection in psutil.Process().net_connections(kind="tcp")
        if connection.raddr and connection.raddr.port == port and connection.status == psutil.CONN_ESTABLISHED
    )


def _records_seen(
    implementation: str, calls_before: int, waiting: int, backlog_records: int, done: bool
) -> float:
    if implementation == "dataworks":
        return float(backlog_records + waiting) if done else 0.0
    from benchmarks import kafka_apply

    return (kafka_apply.calls - calls_before) / waiting


async def _backlog(args: argparse.Namespace) -> Phase:
    from benchmarks import kafka_apply

    runner = _Runner(
        args.implementation,
        bootstrap=args.bootstrap,
        topic=args.backlog_topic,
        start_ms=args.backlog_start_ms,
    )
    calls_before, cpu_before, started = kafka_apply.calls, _cpu(), time.monotonic()
    runner.start(range(args.waiting))
    done = await _wait_for_event(runner.all_fired, args.cap_seconds)
    seconds = time.monotonic() - started
    return Phase(
        fired=len(runner.latencies),
        seconds=seconds,
        cpu_seconds=_cpu() - cpu_before,
        records_per_trigger=_records_seen(
            args.implementation, calls_before, args.waiting, args.backlog_records, done
        ),
        capped=not done,
    )


async def _live(args: argparse.Namespace, measurement: Measurement) -> Phase:
    runner = _Runner(
        args.implementation, bootstrap=args.bootstrap, topic=args.live_topic, start_ms=int(time.time() * 1000)
    )
    _import_triggers(args.implementation)
    measurement.rss_before_mb = _rss_mb()
    runner.start(range(1))
    if not await _wait(runner.ready, args.ready_seconds):
        raise RuntimeError(
            f"the first {args.implementation} trigger did not start reading in {args.ready_seconds} s"
        )
    measurement.rss_one_mb = _rss_mb()
    runner.start(range(1, args.waiting))
    if not await _wait(runner.ready, args.ready_seconds):
        raise RuntimeError(
            f"{args.waiting} {args.implementation} triggers did not start reading in {args.ready_seconds} s"
        )
    measurement.rss_waiting_mb = _rss_mb()
    if args.waiting > 1:
        growth = (measurement.rss_waiting_mb - measurement.rss_one_mb) / (args.waiting - 1)
        measurement.growth_per_trigger_kb = growth * 1024

    cpu_before, started = _cpu(), time.monotonic()
    print(READY_LINE, flush=True)
    # librdkafka opens and closes its bootstrap connection on its own schedule: the most seen counts.
    sampler = asyncio.ensure_future(_sample_connections(args.broker_port, measurement))
    done = await _wait_for_event(runner.all_fired, args.live_seconds + args.grace_seconds)
    sampler.cancel()
    return Phase(
        fired=len(runner.latencies),
        seconds=time.monotonic() - started,
        cpu_seconds=_cpu() - cpu_before,
        latencies_ms=sorted(runner.latencies),
        capped=not done,
    )


def _import_triggers(implementation: str) -> None:
    # Imported before the first memory reading, so that it counts triggers, not modules.
    if implementation == "dataworks":
        import airflow_provider_dataworks.triggers.event  # noqa: F401
    else:
        import airflow.providers.apache.kafka.triggers.await_message  # noqa: F401


async def _measure(args: argparse.Namespace) -> Measurement:
    measurement = Measurement(implementation=args.implementation, waiting=args.waiting)
    if args.phase == "live":
        measurement.live = await _live(args, measurement)
    else:
        measurement.backlog = await _backlog(args)
    return measurement


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m benchmarks.scenario IMPLEMENTATION WAITING ...``; prints ``RESULT {json}``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("phase", choices=("live", "backlog"))
    parser.add_argument("implementation", choices=IMPLEMENTATIONS)
    parser.add_argument("waiting", type=int)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--broker-port", type=int, required=True)
    parser.add_argument("--backlog-topic")
    parser.add_argument("--backlog-records", type=int, default=0)
    parser.add_argument("--backlog-start-ms", type=int, default=0)
    parser.add_argument("--live-topic")
    parser.add_argument("--live-seconds", type=float, default=0.0)
    parser.add_argument("--grace-seconds", type=float, default=5.0)
    parser.add_argument("--cap-seconds", type=float, default=60.0)
    parser.add_argument("--ready-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)

    asyncio.run(_measure_and_exit(args))
    return 1  # not reached


async def _measure_and_exit(args: argparse.Namespace) -> None:
    measurement = await _measure(args)
    print(RESULT_PREFIX + json.dumps(asdict(measurement)), flush=True)
    # Closing a hundred Kafka consumers one by one on the thread they share takes minutes and
    # measures nothing: the process ends here, inside the event loop, before asyncio would cancel
    # and clean up every trigger; the operating system closes the sockets.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
