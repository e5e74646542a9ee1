"""Sensors for DataStudio file changes (commit, deploy, delete) and table changes (commit, deploy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_dataworks.filters import EventFilter
from airflow_provider_dataworks.sensors.event import DataWorksEventSensor

FILE_CHANGE_EVENTS = ("commit-file", "deploy-file", "delete-file")
TABLE_CHANGE_EVENTS = ("commit-table", "deploy-table")


class DataWorksFileChangeSensor(DataWorksEventSensor):
    """
    Wait until a DataStudio file is committed, deployed or deleted, and return the event as XCom.

    :param workspace_ids: workspaces to watch (templated).
    :param file_ids: file ids to accept (templated).
    :param file_names: glob patterns on the file name, such as ``ods_*`` (templated).
    :param operators: ids of the users whose changes count (templated).
    :param event_types: which changes count; commit, deploy and delete by default (templated).
    :param extension_point: ``True`` for the extension-point copy that holds the operation until a
        verdict, ``False`` for the notification after it, ``None`` for both.
    :param kwargs: everything :class:`DataWorksEventSensor` accepts.
    """

    template_fields: Sequence[str] = (
        *DataWorksEventSensor.template_fields,
        "file_ids",
        "file_names",
        "operators",
    )

    def __init__(
        self,
        *,
        workspace_ids: Sequence[int] | int | None = None,
        file_ids: Sequence[int] | int | None = None,
        file_names: Sequence[str] | str | None = None,
        operators: Sequence[str] | str | None = None,
        event_types: Sequence[str] | str = FILE_CHANGE_EVENTS,
        extension_point: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(event_types=event_types, workspace_ids=workspace_ids, **kwargs)
        self.file_ids = file_ids
        self.file_names = file_names
        self.operators = operators
        self.extension_point = extension_point

    def build_filter(self) -> EventFilter:
        """Return the event filter plus the file conditions."""
        return (
            super()
            .build_filter()
            .merged(
                file_ids=self.file_ids,
                file_names=self.file_names,
                operators=self.operators,
                extension_point=self.extension_point,
            )
        )


class DataWorksTableChangeSensor(DataWorksEventSensor):
    """
    Wait until a MaxCompute table is committed or deployed in DataStudio, and return the event as XCom.

    :param workspace_ids: workspaces to watch (templated).
    :param table_names: glob patterns on the table name, such as ``ods_*`` (templated).
    :param operators: ids of the users whose changes count (templated).
    :param event_types: which changes count; commit and deploy by default (templated).
    :param extension_point: ``True`` for the extension-point copy, ``False`` for notifications only.
    :param kwargs: everything :class:`DataWorksEventSensor` accepts.
    """

    template_fields: Sequence[str] = (*DataWorksEventSensor.template_fields, "table_names", "operators")

    def __init__(
        self,
        *,
        workspace_ids: Sequence[int] | int | None = None,
        table_names: Sequence[str] | str | None = None,
        operators: Sequence[str] | str | None = None,
        event_types: Sequence[str] | str = TABLE_CHANGE_EVENTS,
        extension_point: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(event_types=event_types, workspace_ids=workspace_ids, **kwargs)
        self.table_names = table_names
        self.operators = operators
        self.extension_point = extension_point

    def build_filter(self) -> EventFilter:
        """Return the event filter plus the table conditions."""
        return (
            super()
            .build_filter()
            .merged(
                table_names=self.table_names, operators=self.operators, extension_point=self.extension_point
            )
        )
