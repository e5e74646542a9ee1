"""Event envelopes of the emulator (legacy flat and EventBridge CloudEvents) and where records go."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Sink = Callable[[str, "bytes | None", bytes], None]

ENVELOPES = ("legacy", "cloudevents")

DEFAULT_ACCOUNT_ID = "1000000000000001"
DEFAULT_EVENT_BUS = "dw-openevent-bus"
DEFAULT_REGION = "cn-hangzhou"


@dataclass(frozen=True)
class EventKind:
    """What the emulator needs to know about an event type it publishes."""

    code: str
    eventbridge_type: str
    legacy_category: str
    extension_point: bool


# The emulator keeps its own small table rather than importing the provider's catalogue: the emulator
# stands for DataWorks, so a mistake in the provider's catalogue must show up as a failing test there.
EVENT_KINDS: dict[str, EventKind] = {
    kind.code: kind
    for kind in (
        EventKind(
            "instance-status-changes",
            "dataworks:InstanceStatusChanges:InstanceStatusChanges",
            "instance-status-change",
            False,
        ),
        EventKind("rerun-instance", "dataworks:InstanceChange:RerunInstance", "instance-change", False),
        EventKind("commit-file", "dataworks:FileChange:CommitFile", "file-change", True),
        EventKind("deploy-file", "dataworks:FileChange:DeployFile", "file-change", True),
        EventKind("delete-file", "dataworks:FileChange:DeleteFile", "file-change", True),
        EventKind("run-file", "dataworks:FileChange:RunFile", "file-change", True),
        EventKind("commit-table", "dataworks:TableChange:CommitTable", "table-change", True),
        EventKind("deploy-table", "dataworks:TableChange:DeployTable", "table-change", True),
        EventKind("node-change-created", "dataworks:NodeChange:NodeChangeCreated", "node-change", False),
        EventKind("node-change-updated", "dataworks:NodeChange:NodeChangeUpdated", "node-change", False),
        EventKind("node-change-deleted", "dataworks:NodeChange:NodeChangeDeleted", "node-change", False),
    )
}


def event_kind(code: str) -> EventKind:
    """Return the kind of an event type the emulator can publish."""
    try:
        return EVENT_KINDS[code]
    except KeyError:
        raise ValueError(
            f"The emulator does not publish event type {code!r}; use one of {sorted(EVENT_KINDS)} "
            "or publish_raw() for anything else."
        ) from None


def legacy_envelope(
    *, message_id: str, kind: EventKind, block_business: bool, body: dict[str, Any]
) -> dict[str, Any]:
    """Return the flat envelope of the shared Kafka topic (reference §2)."""
    return {
        "messageId": message_id,
        "eventType": kind.code,
        "eventCategoryType": kind.legacy_category,
        "blockBusiness": block_business,
        "messageBody": body,
    }


def cloudevents_envelope(
    *,
    message_id: str,
    kind: EventKind,
    body: dict[str, Any],
    when: dt.datetime | None = None,
    account_id: str = DEFAULT_ACCOUNT_ID,
    event_bus: str = DEFAULT_EVENT_BUS,
    region: str = DEFAULT_REGION,
) -> dict[str, Any]:
    """Return the CloudEvents document an EventBridge rule writes into Kafka (reference §3)."""
    when = when or dt.datetime.now(dt.timezone.utc)
    china = when.astimezone(dt.timezone(dt.timedelta(hours=8)))
    published = when.astimezone(dt.timezone.utc)
    return {
        "id": message_id,
        "source": "acs.dataworks",
        "specversion": "1.0",
        "type": kind.eventbridge_type,
        "subject": "",
        "time": china.isoformat(timespec="seconds"),
        "datacontenttype": "application/json;charset=utf-8",
        "data": body,
        "aliyunaccountid": account_id,
        "aliyunpublishtime": published.strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{published.microsecond // 1000:03d}Z",
        "aliyuneventbusname": event_bus,
        "aliyunregionid": region,
        "aliyunpublishaddr": "127.0.0.1",
    }


def build_envelope(
    envelope: str,
    *,
    kind: EventKind,
    body: dict[str, Any],
    block_business: bool,
    message_id: str | None = None,
) -> dict[str, Any]:
    """Return the envelope ``legacy`` or ``cloudevents`` around an event body.

    The body always carries ``eventCode``, as the newest DataWorks documentation shows.
    """
    body = {"eventCode": kind.code, **body}
    message_id = message_id or str(uuid.uuid4())
    if envelope == "legacy":
        return legacy_envelope(message_id=message_id, kind=kind, block_business=block_business, body=body)
    if envelope == "cloudevents":
        return cloudevents_envelope(message_id=message_id, kind=kind, body=body)
    raise ValueError(f"Unknown envelope {envelope!r}; use one of {list(ENVELOPES)}.")


def envelope_id(document: dict[str, Any]) -> str:
    """Return the message id of an envelope built here."""
    return str(document.get("messageId") or document["id"])


class RecordWriter:
    """Writes records to a callable sink (tests) or to Kafka through a confluent-kafka Producer."""

    def __init__(self, *, kafka_config: dict[str, Any] | None, sink: Sink | None) -> None:
        self._kafka_config = dict(kafka_config) if kafka_config else None
        self._sink = sink
        self._producer: Any = None
        self._lock = threading.Lock()

    @property
    def target(self) -> str:
        """Return where records go: ``sink``, ``kafka`` or ``nowhere``."""
        if self._sink is not None:
            return "sink"
        return "kafka" if self._kafka_config is not None else "nowhere"

    def write(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Write one record and wait until Kafka has acknowledged it.

        :raises RuntimeError: Kafka did not acknowledge the record within 15 seconds.
        """
        if self._sink is not None:
            self._sink(topic, key, value)
            return
        if self._kafka_config is None:
            log.debug("No Kafka configured; dropping a record for topic %s", topic)
            return
        with self._lock:
            producer = self._ensure_producer()
            errors: list[Any] = []
            producer.produce(topic, value=value, key=key, on_delivery=lambda err, _msg: errors.append(err))
            remaining = producer.flush(15)
        if remaining or any(err is not None for err in errors):
            raise RuntimeError(
                f"Kafka did not take the record for topic {topic!r} ({errors or 'timed out'}); "
                "check that the broker in kafka_config is running and the topic may be written."
            )

    def _ensure_producer(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer({"linger.ms": 0, **(self._kafka_config or {})})
        return self._producer

    def close(self) -> None:
        """Flush and drop the producer."""
        with self._lock:
            if self._producer is not None:
                self._producer.flush(5)
                self._producer = None


def encode(document: dict[str, Any]) -> bytes:
    """Return the UTF-8 JSON of an envelope, as DataWorks writes record values."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
