"""Run the DataWorks emulator as a process until SIGTERM (``python -m ...local.emulator``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from airflow_provider_dataworks.local.emulator.app import DataWorksEmulator

log = logging.getLogger("airflow_provider_dataworks.local.emulator")

#: Environment variable read for the AccessKey secret when ``--access-key-secret`` is not given.
SECRET_ENV = "DATAWORKS_EMULATOR_ACCESS_KEY_SECRET"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_dataworks.local.emulator",
        description="Serve the DataWorks OpenAPI emulator and publish DataWorks events to Kafka.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default)")
    parser.add_argument("--topic", default="dataworks-events", help="Kafka topic (default: %(default)s)")
    parser.add_argument("--envelope", choices=("legacy", "cloudevents"), default="legacy")
    parser.add_argument(
        "--kafka-config-json",
        default=None,
        help='librdkafka settings as JSON, e.g. \'{"bootstrap.servers": "127.0.0.1:9092"}\'; '
        "without it events are only kept in memory",
    )
    parser.add_argument("--access-key-id", default="emulator-access-key")
    parser.add_argument(
        "--access-key-secret",
        default=os.environ.get(SECRET_ENV, "emulator-access-secret"),
        help=f"the secret requests must be signed with (never logged); default: ${SECRET_ENV}, which keeps "
        "it off the command line, else 'emulator-access-secret'",
    )
    parser.add_argument("--seed", choices=("demo",), default=None, help="load the demo workspace and nodes")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Start the emulator, print one JSON line with its URL on stdout, and serve until SIGTERM or SIGINT."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    kafka_config: dict[str, Any] | None = None
    if args.kafka_config_json:
        kafka_config = json.loads(args.kafka_config_json)
        if not isinstance(kafka_config, dict):
            _parser().error("--kafka-config-json must be a JSON object")

    emulator = DataWorksEmulator(
        host=args.host,
        port=args.port,
        kafka_config=kafka_config,
        topic=args.topic,
        envelope=args.envelope,
        access_key_id=args.access_key_id,
        access_key_secret=args.access_key_secret,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    emulator.start()
    try:
        if args.seed == "demo":
            emulator.seed_demo()
        print(json.dumps({"url": emulator.url, "port": emulator.port, "topic": emulator.topic}), flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
