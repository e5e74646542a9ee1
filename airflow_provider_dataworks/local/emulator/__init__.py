"""A local DataWorks for tests and demos: the OpenAPI for the unmodified SDK, and events in Kafka."""

from __future__ import annotations

from airflow_provider_dataworks.local.emulator.app import DataWorksEmulator

__all__ = ["DataWorksEmulator"]
