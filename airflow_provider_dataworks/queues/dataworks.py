"""The common.messaging queue provider for DataWorks events: ``MessageQueueTrigger(scheme="dataworks")``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.messaging.providers.base_provider import BaseMessageQueueProvider

if TYPE_CHECKING:
    from airflow.triggers.base import BaseEventTrigger


class DataWorksMessageQueueProvider(BaseMessageQueueProvider):
    """
    Let ``MessageQueueTrigger(scheme="dataworks", ...)`` schedule DAGs on DataWorks events.

    The keyword arguments go to
    :class:`~airflow_provider_dataworks.triggers.asset.DataWorksAssetEventTrigger`:
    ``dataworks_conn_id``, ``event_filter``, ``topic`` and ``consumer_group``. Only the scheme is
    matched; there is no ``dataworks://`` queue URI (the deprecated ``queue=`` form).

    Airflow imports and instantiates every queue provider when the common.messaging trigger module
    is imported, so this module imports nothing heavy; the trigger class is imported on first use.
    """

    scheme = "dataworks"

    def trigger_class(self) -> type[BaseEventTrigger]:
        """Return :class:`~airflow_provider_dataworks.triggers.asset.DataWorksAssetEventTrigger`."""
        from airflow_provider_dataworks.triggers.asset import DataWorksAssetEventTrigger

        return DataWorksAssetEventTrigger
