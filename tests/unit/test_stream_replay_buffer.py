"""The shared stream's buffer of recent events: compact, indexed, oldest pushed out first."""

from __future__ import annotations

import gc
import json

from airflow_provider_dataworks.events import parse
from airflow_provider_dataworks.triggers.reader import ReceivedEvent, RecordInfo
from airflow_provider_dataworks.triggers.stream import _expand, _RecentEvents


def _received(offset: int, *, instance: int, node: int, workspace: int = 10001) -> ReceivedEvent:
    envelope = {
        "messageId": f"m-{offset}",
        "eventType": "instance-status-changes",
        "messageBody": {"taskId": instance, "nodeId": node, "dagId": 1, "status": 6, "appId": workspace},
    }
    return ReceivedEvent(parse(json.dumps(envelope).encode()), RecordInfo("t", 0, offset, 1_000 + offset))


def _offsets(kept: list) -> list[int]:
    return [_expand(recent, "t").record.offset for recent in kept]


def test_buffer_pushes_out_the_oldest_and_forgets_it_in_the_index():
    recent = _RecentEvents(2)

    pushed = [recent.append(_received(o, instance=o % 2, node=7)) for o in range(3)]

    assert pushed == [None, None, 1_000]
    assert _offsets(recent.matching("instance_ids", (0,))) == [2]
    assert _offsets(recent.matching("node_ids", (7,))) == [1, 2]
    assert _offsets(recent.matching(None, ())) == [1, 2]


def test_buffer_finds_events_by_any_field_in_arrival_order_without_duplicates():
    recent = _RecentEvents(10)
    for offset in range(4):
        recent.append(_received(offset, instance=offset, node=offset % 2, workspace=10001 + offset % 2))

    assert _offsets(recent.matching("instance_ids", (3, 1, 3))) == [1, 3]
    assert _offsets(recent.matching("workspace_ids", (10002,))) == [1, 3]
    assert _offsets(recent.matching("event_types", ("instance-status-changes",))) == [0, 1, 2, 3]


def test_replayed_event_is_the_same_event_parsed_again():
    original = _received(5, instance=42, node=7)
    recent = _RecentEvents(10)
    recent.append(original)

    [kept] = recent.matching("instance_ids", (42,))
    replayed = _expand(kept, "t")

    assert replayed.event == original.event
    assert replayed.record == original.record


def test_kept_events_are_no_work_for_the_garbage_collector():
    recent = _RecentEvents(10)
    recent.append(_received(1, instance=42, node=7))
    # A tuple is untracked once the collector has seen that everything in it is; that may take two
    # passes when its parts sit in an older generation.
    gc.collect()
    gc.collect()

    [kept] = recent.matching(None, ())

    assert not gc.is_tracked(kept)
