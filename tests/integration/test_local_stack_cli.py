"""The ``dataworks-local`` command line, run as a separate process the way users run it."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

pytestmark = pytest.mark.integration

_ENV_PREFIX = "export AIRFLOW_CONN_DATAWORKS_DEFAULT="


def _cli(home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow_provider_dataworks.local", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _connection_from_env_output(stdout: str) -> dict[str, Any]:
    line = stdout.strip()
    assert line.startswith(_ENV_PREFIX), line
    words = shlex.split(line[len("export ") :])
    name, _, value = words[0].partition("=")
    assert name == "AIRFLOW_CONN_DATAWORKS_DEFAULT"
    connection: dict[str, Any] = json.loads(value)
    return connection


def _consumer_for(connection: dict[str, Any]) -> Consumer:
    extra = connection["extra"]
    assert extra["ssl_verify_hostname"] is True
    consumer = Consumer(
        {
            "bootstrap.servers": connection["host"],
            "security.protocol": extra["security_protocol"],
            "sasl.mechanisms": extra["sasl_mechanism"],
            "sasl.username": connection["login"],
            "sasl.password": connection["password"],
            "ssl.ca.location": extra["ssl_ca"],
            "ssl.endpoint.identification.algorithm": "https",
            "group.id": f"cli-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([extra["topic"]])
    return consumer


def _collect_until(consumer: Consumer, done: Any, timeout: float = 30) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    while not done(values) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(bytes(message.value()))
    return values


def test_cli_up_status_env_publish_down_runs_a_working_stack(tmp_path: Path) -> None:
    home = tmp_path / "stack"
    try:
        up = _cli(home, "up", "--ports", "auto")
        assert up.returncode == 0, up.stderr
        status = _cli(home, "status")
        env = _cli(home, "env")
        plaintext_env = _cli(home, "env", "--listener", "plaintext")
        published = _cli(
            home, "publish", "instance", "--workspace", "10001", "--node", "700000001", "--status", "SUCCESS"
        )
        raw = _cli(home, "publish", "raw", "--value", "not json at all")

        connection = _connection_from_env_output(env.stdout)
        secrets = (connection["password"], connection["extra"]["access_key_secret"])
        assert status.returncode == 0, status.stderr
        assert "running" in status.stdout and connection["host"] in status.stdout
        for secret in secrets:
            assert secret not in status.stdout + status.stderr + up.stdout + up.stderr

        assert connection == json.loads((home / "connection.json").read_text())
        assert connection["conn_type"] == "dataworks"
        assert connection["extra"]["security_protocol"] == "SASL_SSL"
        assert connection["extra"]["topic"] == "dataworks-events"
        assert connection["extra"]["protocol"] == "http"
        assert Path(connection["extra"]["ssl_ca"]).is_file()
        for private in (home / "connection.json", home / "airflow.env"):
            assert stat.S_IMODE(private.stat().st_mode) == 0o600
        sourced = subprocess.run(
            [
                "bash",
                "-c",
                f"source {shlex.quote(str(home / 'airflow.env'))} && printenv AIRFLOW_CONN_DATAWORKS_DEFAULT",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(sourced.stdout) == connection

        plaintext = _connection_from_env_output(plaintext_env.stdout)
        assert plaintext["extra"]["security_protocol"] == "PLAINTEXT"
        assert not {"login", "password"} & plaintext.keys()
        assert "ssl_ca" not in plaintext["extra"]

        assert published.returncode == 0, published.stderr
        instance_id = json.loads(published.stdout)["id"]
        assert raw.returncode == 0, raw.stderr
        raw_value = b"not json at all"
        consumer = _consumer_for(connection)
        try:
            values = _collect_until(
                consumer,
                lambda values: raw_value in values and any(str(instance_id).encode() in v for v in values),
            )
        finally:
            consumer.close()
        events = [json.loads(value) for value in values if str(instance_id).encode() in value]
        assert events, "the published instance event did not reach the topic"
        assert events[0]["eventType"].startswith("instance-status-change")
        assert raw_value in values, "the raw record did not reach the topic"
    finally:
        down = _cli(home, "down")

    assert down.returncode == 0, down.stderr
    after = _cli(home, "status")
    assert after.returncode == 3
    assert "stopped" in after.stdout
    assert _cli(home, "down").returncode == 0


def test_cli_without_a_stack_fails_with_one_line_errors(tmp_path: Path) -> None:
    home = tmp_path / "nothing-here"

    status = _cli(home, "status")
    env = _cli(home, "env")
    publish = _cli(home, "publish", "raw", "--value", "x")

    assert status.returncode == 3
    assert env.returncode == 1
    assert env.stderr.strip().count("\n") == 0
    assert "run 'dataworks-local up' first" in env.stderr
    assert publish.returncode == 1
    assert publish.stderr.strip().count("\n") == 0
    assert "not running" in publish.stderr
