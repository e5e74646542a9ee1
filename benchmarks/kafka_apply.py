"""The apply_function the Kafka provider's AwaitMessageTrigger runs in the benchmark: one instance's event."""

from __future__ import annotations

import json
from typing import Any

# Records looked at by all AwaitMessageTriggers of the process (they call this on one thread).
calls = 0


def match_instance(message: Any, instance_id: int) -> dict[str, Any] | None:
    """
    Return the fire payload when ``message`` is a DataWorks event about ``instance_id``, else ``None``.

    Written the way a DAG author would for the Kafka provider: decode the JSON, look at the
    legacy envelope's ``messageBody`` (or the CloudEvents ``data``), compare the instance id.
    """
    global calls
    calls += 1
    value = message.value()
    if not value:
        return None
    document = json.loads(value)
    body = document.get("messageBody") or document.get("data") or {}
    if body.get("taskId") != instance_id:
        return None
    return {
        "instance_id": instance_id,
        "message_id": document.get("messageId") or document.get("id"),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp": message.timestamp()[1],
    }
