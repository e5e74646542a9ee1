"""An operator that reports the health and scope of a DataWorks event subscription."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_provider_dataworks.events import EVENT_TYPES, canonical_event_type
from airflow_provider_dataworks.exceptions import DataWorksOpenAPIError
from airflow_provider_dataworks.hooks.dataworks import DataWorksHook
from airflow_provider_dataworks.hooks.groups import ConsumerGroupAdmin, GroupDescription
from airflow_provider_dataworks.triggers.reader import EventReader, ReceivedEvent, to_epoch_ms

#: DataWorks feeds one shared topic from at most this many workspaces.
MAX_WORKSPACES_PER_TOPIC = 5


@dataclass
class _Tally:
    count: int = 0
    extension_points: int = 0
    last_ms: int | None = None
    last_message_id: str | None = None

    def add(self, item: ReceivedEvent) -> None:
        self.count += 1
        self.extension_points += int(item.event.extension_point)
        stamp = item.record.timestamp
        if stamp is not None and (self.last_ms is None or stamp >= self.last_ms):
            self.last_ms = stamp
            self.last_message_id = item.event.message_id


@dataclass
class _Window:
    start_ms: int
    end_ms: int
    records: int = 0
    events: int = 0
    complete: bool = True
    stopped_because: str | None = None
    tallies: dict[tuple[int | None, str], _Tally] = field(default_factory=dict)


class DataWorksDescribeSubscriptionOperator(BaseOperator):
    """
    Report what a DataWorks event subscription delivers, and who reads it.

    The report covers:

    * every consumer group of the topic (groups with committed offsets, the connection's own
      group and ``group_ids``): its state, members, committed offsets and lag per partition;
    * the events of a time window, read from the topic without a consumer group: per workspace
      and event type, how many arrived, how many were extension points, and when the last one did;
    * every workspace seen or expected, checked against the DataWorks OpenAPI (``GetProject``):
      whether it exists and the connection's AccessKey may see it;
    * every event type seen or expected, checked against the DataWorks event catalogue.

    Which workspaces and event types feed the topic is chosen in the DataWorks console, which
    has no API; ``workspace_ids`` and ``event_types`` say what you expect, and the report warns
    about expected ones that sent nothing in the window. The task logs a short table and returns
    the report (JSON-safe) with a ``warnings`` list.

    :param topic: the subscription topic; the connection's topic by default (templated).
    :param window: how far back from ``end_time`` to read events, as a timedelta or seconds.
    :param start_time: where the window starts, overriding ``window``: datetime, ISO-8601 text or
        epoch milliseconds (templated).
    :param end_time: where the window ends; now by default (templated).
    :param workspace_ids: workspaces expected to send events (templated).
    :param event_types: event types expected on the topic, by code, EventBridge type or legacy
        name (templated).
    :param group_ids: further consumer groups to report on, with or without offsets (templated).
    :param check_workspaces: ask the OpenAPI about every workspace (needs the connection's
        AccessKey; skipped with a warning when it has none).
    :param max_records: stop reading the window after this many records.
    :param read_timeout: stop reading the window after this many seconds.
    :param dataworks_conn_id: the ``dataworks`` connection.
    :param kafka_timeout: seconds any one Kafka admin call may take.
    """

    template_fields: Sequence[str] = (
        "topic",
        "start_time",
        "end_time",
        "workspace_ids",
        "event_types",
        "group_ids",
    )
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        topic: str | None = None,
        window: timedelta | float = timedelta(hours=24),
        start_time: datetime | str | int | None = None,
        end_time: datetime | str | int | None = None,
        workspace_ids: Sequence[int] | int | str | None = None,
        event_types: Sequence[str] | str | None = None,
        group_ids: Sequence[str] | str | None = None,
        check_workspaces: bool = True,
        max_records: int = 100_000,
        read_timeout: float = 120.0,
        dataworks_conn_id: str = DataWorksHook.default_conn_name,
        kafka_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        seconds = window.total_seconds() if isinstance(window, timedelta) else float(window)
        if seconds <= 0:
            raise ValueError(f"window must be positive, not {window!r}")
        if max_records < 1 or read_timeout <= 0 or kafka_timeout <= 0:
            raise ValueError("max_records, read_timeout and kafka_timeout must be positive")
        self.topic = topic
        self.window_seconds = seconds
        self.start_time = start_time
        self.end_time = end_time
        self.workspace_ids = workspace_ids
        self.event_types = event_types
        self.group_ids = group_ids
        self.check_workspaces = check_workspaces
        self.max_records = max_records
        self.read_timeout = read_timeout
        self.dataworks_conn_id = dataworks_conn_id
        self.kafka_timeout = kafka_timeout

    def execute(self, context: Context) -> dict[str, Any]:
        hook = DataWorksHook(self.dataworks_conn_id)
        admin = ConsumerGroupAdmin(hook, self.topic, timeout=self.kafka_timeout)
        end_ms = to_epoch_ms(self.end_time) or int(time.time() * 1000)
        start_ms = to_epoch_ms(self.start_time) or end_ms - int(self.window_seconds * 1000)
        if start_ms >= end_ms:
            raise ValueError(
                f"The window of task {self.task_id!r} is empty: start {_iso(start_ms)} is not before end "
                f"{_iso(end_ms)}"
            )
        expected_workspaces = _int_list(self.workspace_ids)
        expected_types = [canonical_event_type(name) for name in _str_list(self.event_types)]

        marks = admin.watermarks()
        groups = self._describe_groups(admin, marks)
        window = self._read_window(hook, admin, start_ms, end_ms)
        workspaces = self._check_workspaces(hook, window, expected_workspaces)
        event_types = _check_event_types(window, expected_types)

        report: dict[str, Any] = {
            "topic": admin.topic,
            "partitions": [
                {"partition": p, "earliest": low, "latest": high} for p, (low, high) in marks.items()
            ],
            "window": {
                "start": _iso(start_ms),
                "end": _iso(end_ms),
                "records": window.records,
                "events": window.events,
                "complete": window.complete,
            },
            "groups": groups,
            "events": [
                {
                    "workspace_id": workspace_id,
                    "event_type": event_type,
                    "count": tally.count,
                    "extension_points": tally.extension_points,
                    "last_time": _iso(tally.last_ms),
                    "last_message_id": tally.last_message_id,
                }
                for (workspace_id, event_type), tally in sorted(window.tallies.items(), key=_tally_order)
            ],
            "workspaces": workspaces,
            "event_types": event_types,
        }
        report["warnings"] = _warnings(report, window, admin.connection_group, hook, self.check_workspaces)
        self.log.info("%s", format_report(report))
        return report

    def _describe_groups(
        self, admin: ConsumerGroupAdmin, marks: Mapping[int, tuple[int, int]]
    ) -> list[dict[str, Any]]:
        wanted = [*admin.groups_on_topic(), *_str_list(self.group_ids)]
        if admin.connection_group:
            wanted.append(admin.connection_group)
        committed = admin.committed_many(sorted(set(wanted)))
        return [
            _group_report(group, offsets, admin.describe(group), marks, admin.connection_group)
            for group, offsets in committed.items()
        ]

    def _read_window(
        self, hook: DataWorksHook, admin: ConsumerGroupAdmin, start_ms: int, end_ms: int
    ) -> _Window:
        window = _Window(start_ms=start_ms, end_ms=end_ms)
        ends = admin.offsets_for(end_ms + 1)
        reader = EventReader(hook, admin.topic, metadata_timeout=self.kafka_timeout)
        try:
            starts = reader.seek_to_time(start_ms)
            self.log.info(
                "Reading topic %s from %s to %s: offsets %s to %s",
                admin.topic,
                _iso(start_ms),
                _iso(end_ms),
                starts,
                ends,
            )
            deadline = time.monotonic() + self.read_timeout

            def consumed() -> int:
                return sum(
                    max(0, min(reader.positions.get(p, start), ends.get(p, 0)) - start)
                    for p, start in starts.items()
                )

            while any(reader.positions[p] < ends.get(p, 0) for p in reader.positions):
                if consumed() >= self.max_records or time.monotonic() >= deadline:
                    window.complete = False
                    window.stopped_because = (
                        f"max_records ({self.max_records})"
                        if consumed() >= self.max_records
                        else f"read_timeout ({self.read_timeout:.0f} s)"
                    )
                    break
                for item in reader.read(max_records=min(500, self.max_records), timeout=1.0):
                    _count(window, item, ends)
            window.records = consumed()
        finally:
            reader.close()
        return window

    def _check_workspaces(
        self, hook: DataWorksHook, window: _Window, expected: Sequence[int]
    ) -> list[dict[str, Any]]:
        counts: dict[int, int] = {}
        for (workspace_id, _), tally in window.tallies.items():
            if workspace_id is not None:
                counts[workspace_id] = counts.get(workspace_id, 0) + tally.count
        ids = sorted(set(counts) | set(expected))
        can_check = self.check_workspaces and bool(hook.settings.access_key_id)
        return [
            {
                "workspace_id": workspace_id,
                "events": counts.get(workspace_id, 0),
                "expected": workspace_id in expected,
                **(_workspace_status(hook, workspace_id) if can_check else {"checked": False}),
            }
            for workspace_id in ids
        ]


def _count(window: _Window, item: ReceivedEvent, ends: Mapping[int, int]) -> None:
    record = item.record
    if record.offset >= ends.get(record.partition, 0):
        return
    if record.timestamp is not None and not window.start_ms <= record.timestamp <= window.end_ms:
        return
    window.events += 1
    key = (item.event.workspace_id, item.event.event_type)
    window.tallies.setdefault(key, _Tally()).add(item)


def _group_report(
    group_id: str,
    committed: Mapping[int, int | None],
    description: GroupDescription,
    marks: Mapping[int, tuple[int, int]],
    connection_group: str | None,
) -> dict[str, Any]:
    partitions = []
    for partition, (_, high) in sorted(marks.items()):
        offset = committed.get(partition)
        partitions.append(
            {
                "partition": partition,
                "committed": offset,
                "lag": None if offset is None else max(0, high - offset),
            }
        )
    lags = [p["lag"] for p in partitions if p["lag"] is not None]
    return {
        "group_id": group_id,
        "connection_group": group_id == connection_group,
        "state": description.state,
        "members": [member.to_dict() for member in description.members],
        "offsets": partitions,
        "lag": sum(lags) if lags else None,
    }


def _workspace_status(hook: DataWorksHook, workspace_id: int) -> dict[str, Any]:
    from alibabacloud_dataworks_public20200518 import models

    client = hook.get_openapi_client()
    try:
        response = hook.call_openapi(
            "GetProject",
            lambda: client.get_project(models.GetProjectRequest(project_id=workspace_id)),
            max_attempts=3,
            max_seconds=60,
        )
    except DataWorksOpenAPIError as error:
        code = str(error.code or "")
        if code.startswith("Forbidden"):
            return {"checked": True, "exists": True, "visible": False, "problem": str(error)}
        if "NotExist" in code:
            return {"checked": True, "exists": False, "visible": False, "problem": str(error)}
        raise
    data = response.body.data
    return {
        "checked": True,
        "exists": True,
        "visible": True,
        "identifier": getattr(data, "project_identifier", None),
        "name": getattr(data, "project_name", None),
        "status": getattr(data, "status", None),
    }


def _check_event_types(window: _Window, expected: Sequence[str]) -> list[dict[str, Any]]:
    counts: dict[str, int] = {}
    for (_, event_type), tally in window.tallies.items():
        counts[event_type] = counts.get(event_type, 0) + tally.count
    report = []
    for event_type in sorted(set(counts) | set(expected)):
        known = EVENT_TYPES.get(event_type)
        report.append(
            {
                "event_type": event_type,
                "events": counts.get(event_type, 0),
                "expected": event_type in expected,
                "known": known is not None,
                "module": known.module if known else None,
                "extension_point": known.extension_point if known else None,
            }
        )
    return report


def _warnings(
    report: Mapping[str, Any],
    window: _Window,
    connection_group: str | None,
    hook: DataWorksHook,
    check_workspaces: bool,
) -> list[str]:
    warnings: list[str] = []
    if not window.complete:
        warnings.append(
            f"Stopped reading the window at {window.stopped_because}; counts cover part of the window only."
        )
    if window.records > window.events:
        warnings.append(
            f"{window.records - window.events} record(s) in the window are not counted: not DataWorks events "
            "(logged above) or stamped outside the window."
        )
    for group in report["groups"]:
        if group["connection_group"] and group["lag"] is None:
            warnings.append(
                f"The connection's consumer group {connection_group!r} has no committed offsets on the "
                "topic; its consumers start where their auto.offset.reset says."
            )
    if check_workspaces and not hook.settings.access_key_id:
        warnings.append(
            "Workspaces were not checked: the connection has no DataWorks AccessKey (access_key_id)."
        )
    for workspace in report["workspaces"]:
        if workspace.get("checked") and not workspace.get("exists"):
            warnings.append(f"Workspace {workspace['workspace_id']} does not exist in DataWorks.")
        elif workspace.get("checked") and not workspace.get("visible"):
            warnings.append(
                f"Workspace {workspace['workspace_id']} is not visible to the connection's AccessKey: add "
                "its RAM user to the workspace, or sensors checking it through the OpenAPI will fail."
            )
        if workspace["expected"] and not workspace["events"]:
            warnings.append(
                f"Workspace {workspace['workspace_id']} sent no events in the window; check that the "
                "subscription in the DataWorks console includes it."
            )
    seen = [w for w in report["workspaces"] if w["events"]]
    if len(seen) > MAX_WORKSPACES_PER_TOPIC:
        warnings.append(
            f"Events came from {len(seen)} workspaces; a DataWorks shared topic is fed by at most "
            f"{MAX_WORKSPACES_PER_TOPIC}."
        )
    for event_type in report["event_types"]:
        if not event_type["known"]:
            warnings.append(
                f"Event type {event_type['event_type']!r} is not in the DataWorks event catalogue (a new "
                "event, or a misspelt name)."
            )
        if event_type["expected"] and not event_type["events"]:
            warnings.append(
                f"No {event_type['event_type']} events in the window; check that the subscription in the "
                "DataWorks console includes this event type."
            )
    return warnings


def format_report(report: Mapping[str, Any]) -> str:
    """Return the short text tables the operator logs for a report."""
    window = report["window"]
    lines = [
        f"DataWorks subscription on topic {report['topic']} ({len(report['partitions'])} partitions), "
        f"window {window['start']} to {window['end']}: "
        f"{window['events']} events in {window['records']} records",
    ]
    lines += _table(
        ("GROUP", "STATE", "MEMBERS", "LAG"),
        [
            (
                group["group_id"] + (" (connection)" if group["connection_group"] else ""),
                group["state"],
                str(len(group["members"])),
                "-" if group["lag"] is None else str(group["lag"]),
            )
            for group in report["groups"]
        ],
    )
    lines += _table(
        ("WORKSPACE", "EVENT TYPE", "COUNT", "LAST EVENT"),
        [
            (
                "-" if entry["workspace_id"] is None else str(entry["workspace_id"]),
                entry["event_type"],
                str(entry["count"]),
                entry["last_time"] or "-",
            )
            for entry in report["events"]
        ],
    )
    lines.extend(f"WARNING: {warning}" for warning in report.get("warnings", []))
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[index]) for row in (header, *rows)) for index in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def _tally_order(item: tuple[tuple[int | None, str], _Tally]) -> tuple[int, str]:
    (workspace_id, event_type), _ = item
    return (-1 if workspace_id is None else workspace_id, event_type)


def _iso(epoch_ms: int | None) -> str | None:
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def _str_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(item).strip() for item in value if str(item).strip()]


def _int_list(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    try:
        return [int(item) for item in _str_list(value)]
    except ValueError:
        raise ValueError(f"workspace_ids must be workspace ids (integers), not {value!r}") from None


__all__ = ["DataWorksDescribeSubscriptionOperator", "format_report"]
