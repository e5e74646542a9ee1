"""A tiny run of the benchmark on the session broker, so that `python -m benchmarks.run` cannot rot."""

from __future__ import annotations

import pytest

from benchmarks.run import Plan, run, to_markdown

pytestmark = pytest.mark.integration

TINY = Plan(
    sizes=(2,),
    kafka_max_waiting=2,
    backlog_records=300,
    backlog_cap_seconds=2.0,
    live_rate=200.0,
    live_seconds=1.0,
    grace_seconds=2.0,
)


def test_benchmark_measures_every_trigger_and_writes_the_table(kafka_broker, tmp_path):
    report = run(
        TINY,
        bootstrap=kafka_broker.plaintext_bootstrap,
        broker_port=kafka_broker.plaintext_port,
        log_dir=tmp_path,
        progress=False,
    )

    ours = report.row("dataworks", 2)
    assert ours is not None and ours.result is not None
    assert ours.live["fired"] == 2
    assert ours.backlog["fired"] == 2
    assert ours.records_per_second and ours.records_per_second > 0
    assert ours.latency(0.99) is not None
    assert ours.result["kafka_connections"] >= 1
    for implementation in ("kafka-default", "kafka-fast"):
        row = report.row(implementation, 2)
        assert row is not None and row.result is not None, implementation
        assert row.result["kafka_connections"] >= 2, implementation
    table = to_markdown(report)
    assert "| DataWorksEventTrigger (shared stream) | 2 |" in table
    assert "One set of consumer connections whatever N" in table
