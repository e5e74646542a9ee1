"""Command line of the local stack: ``python -m airflow_provider_dataworks.local`` or ``dataworks-local``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow_provider_dataworks.local.kafka import LocalKafkaError, ensure_kafka_jars
from airflow_provider_dataworks.local.stack import (
    DEFAULT_CONN_ID,
    DEFAULT_PORTS,
    DEFAULT_TOPIC,
    ENVELOPES,
    LISTENERS,
    LocalStack,
    LocalStackError,
    StackPorts,
)

_PROG = "dataworks-local"
_NOT_RUNNING = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dataworks-local`` command line; return its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format=f"{_PROG}: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args))
    except (LocalStackError, LocalKafkaError, ValueError) as err:
        print(f"{_PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Run a local Kafka broker and DataWorks emulator for airflow-provider-dataworks.",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="state folder of the stack (default: $DATAWORKS_LOCAL_HOME or ./.dataworks-local)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only results and errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fetch = commands.add_parser("fetch", help="download and cache the Kafka broker jars")
    fetch.set_defaults(handler=_fetch)

    up = commands.add_parser("up", help="start the broker and the emulator, write the Airflow connection")
    up.add_argument(
        "--envelope", choices=ENVELOPES, default="legacy", help="event envelope (default: legacy)"
    )
    up.add_argument(
        "--ports",
        choices=("default", "auto"),
        default="default",
        help=(
            f"'default': Kafka {DEFAULT_PORTS.plaintext} (plaintext), {DEFAULT_PORTS.sasl_ssl} (sasl_ssl), "
            f"{DEFAULT_PORTS.controller} (controller), emulator {DEFAULT_PORTS.emulator}; 'auto': free ports"
        ),
    )
    up.add_argument("--topic", default=DEFAULT_TOPIC, help=f"event topic (default: {DEFAULT_TOPIC})")
    up.add_argument("--partitions", type=int, default=3, help="partitions of the topic (default: 3)")
    up.add_argument(
        "--listener", choices=LISTENERS, default="sasl_ssl", help="listener of the written connection"
    )
    up.add_argument("--timeout", type=float, default=120, help="seconds to wait for each part (default: 120)")
    up.set_defaults(handler=_up)

    down = commands.add_parser("down", help="stop the broker and the emulator")
    down.add_argument("--purge", action="store_true", help="also delete broker data, credentials, connection")
    down.set_defaults(handler=_down)

    status = commands.add_parser("status", help="show what runs where (exit code 3 when not up)")
    status.set_defaults(handler=_status)

    env = commands.add_parser("env", help="print the export line of the Airflow connection")
    env.add_argument(
        "--listener", choices=LISTENERS, default=None, help="listener (default: the one of 'up')"
    )
    env.add_argument("--conn-id", default=DEFAULT_CONN_ID, help=f"connection id (default: {DEFAULT_CONN_ID})")
    env.set_defaults(handler=_env)

    publish = commands.add_parser("publish", help="publish an event through the emulator")
    kinds = publish.add_subparsers(dest="kind", required=True, metavar="KIND")
    instance = kinds.add_parser("instance", help="an instance status change of a node")
    instance.add_argument("--node", type=int, required=True, help="node id (demo: 700000001, 700000002)")
    instance.add_argument("--status", required=True, help="status name (e.g. SUCCESS, FAILURE) or code")
    instance.add_argument("--workspace", type=int, default=None, help="workspace id the node must be in")
    instance.add_argument(
        "--bizdate", default=None, help="business date, YYYY-MM-DD (default: yesterday in Asia/Shanghai)"
    )
    instance.set_defaults(handler=_publish, route="publish/instance")
    node = kinds.add_parser("node", help="a node change")
    node.add_argument("--node", type=int, required=True, help="node id")
    node.add_argument("--event-type", default=None, help="e.g. node-change-updated (default)")
    node.set_defaults(handler=_publish, route="publish/node")
    file = kinds.add_parser("file", help="a file change (commit-file, deploy-file, ...)")
    file.add_argument("--file", type=int, required=True, help="file id (demo: 500000001, 500000002)")
    file.add_argument("--event-type", default=None, help="e.g. commit-file, deploy-file")
    file.add_argument(
        "--extension-point",
        dest="extension",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="publish the extension-point copy, which holds the operation until a verdict arrives",
    )
    file.set_defaults(handler=_publish, route="publish/file")
    table = kinds.add_parser("table", help="a table change (commit-table, deploy-table)")
    table.add_argument("--workspace", type=int, required=True, help="workspace id")
    table.add_argument("--table", required=True, help="table name")
    table.add_argument("--event-type", default=None, help="e.g. commit-table, deploy-table")
    table.set_defaults(handler=_publish, route="publish/table")
    raw = kinds.add_parser("raw", help="put a record on the topic as it is")
    raw.add_argument("--value", required=True, help="record value (JSON or any text)")
    raw.add_argument("--key", default=None, help="record key")
    raw.set_defaults(handler=_publish, route="publish/raw")

    play = commands.add_parser("play", help="play a scripted schedule of events")
    plays = play.add_subparsers(dest="script", required=True, metavar="SCRIPT")
    demo = plays.add_parser("demo", help="run node 700000001's instance for yesterday to SUCCESS")
    demo.add_argument("--delay", type=float, default=None, help="seconds before the first status change")
    demo.add_argument("--step", type=float, default=None, help="seconds between the later status changes")
    demo.set_defaults(handler=_play_demo)
    return parser


def _stack(args: argparse.Namespace) -> LocalStack:
    return LocalStack(state_dir=args.home)


def _fetch(args: argparse.Namespace) -> int:
    print(ensure_kafka_jars())
    return 0


def _up(args: argparse.Namespace) -> int:
    stack = _stack(args)
    status = stack.up(
        ports=StackPorts.auto() if args.ports == "auto" else DEFAULT_PORTS,
        topic=args.topic,
        envelope=args.envelope,
        listener=args.listener,
        num_partitions=args.partitions,
        timeout=args.timeout,
    )
    print("\n".join(status.lines()))
    print(f"\nUse it from Airflow: source {stack.env_path}")
    return 0


def _down(args: argparse.Namespace) -> int:
    _stack(args).down(purge=args.purge)
    return 0


def _status(args: argparse.Namespace) -> int:
    status = _stack(args).status()
    print("\n".join(status.lines()))
    return 0 if status.up else _NOT_RUNNING


def _env(args: argparse.Namespace) -> int:
    print(_stack(args).env_line(listener=args.listener, conn_id=args.conn_id))
    return 0


# Command line option -> control API body field, for every ``publish`` kind.
_PUBLISH_FIELDS = {
    "node": "node",
    "status": "status",
    "workspace": "workspace",
    "bizdate": "business_date",
    "event_type": "event_type",
    "file": "file",
    "table": "table",
    "value": "value",
    "key": "key",
    "extension": "extension",
}


def _publish(args: argparse.Namespace) -> int:
    options = vars(args)
    payload = {
        field: options[option] for option, field in _PUBLISH_FIELDS.items() if options.get(option) is not None
    }
    _print_json(_stack(args).control("POST", args.route, payload))
    return 0


def _play_demo(args: argparse.Namespace) -> int:
    payload = {name: getattr(args, name) for name in ("delay", "step") if getattr(args, name) is not None}
    _print_json(_stack(args).control("POST", "play/demo", payload))
    return 0


def _print_json(body: Any) -> None:
    if body is not None:
        print(json.dumps(body, indent=2, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
