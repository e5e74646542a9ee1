"""Hooks of the DataWorks provider."""

from __future__ import annotations

from airflow_provider_dataworks.hooks.dataworks import DataWorksHook
from airflow_provider_dataworks.hooks.settings import DataWorksConnectionSettings

__all__ = ["DataWorksConnectionSettings", "DataWorksHook"]
