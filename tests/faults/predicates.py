"""Event filter predicates for the fault suite: installed code, as the triggerer needs it."""

from __future__ import annotations

from airflow_provider_dataworks.events import DataWorksEvent

EXPLODING_NODE = 700000666


def explode_on_one_node(event: DataWorksEvent) -> bool:
    """Raise on events of ``EXPLODING_NODE``, accept every other event."""
    if EXPLODING_NODE in event.node_ids:
        raise RuntimeError("this predicate cannot handle that node")
    return True
