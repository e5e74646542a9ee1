"""Predicates the filter tests import by dotted path."""

from __future__ import annotations

from airflow_provider_dataworks.events import DataWorksEvent


def only_ods_files(event: DataWorksEvent) -> bool:
    return (event.file_name or "").startswith("ods_")
