"""Data-only filters that decide which DataWorks events a sensor or trigger is waiting for."""

from __future__ import annotations

import fnmatch
import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from airflow_provider_dataworks.events import DataWorksEvent, InstanceStatus, canonical_event_type

EventPredicate = Callable[[DataWorksEvent], bool]

log = logging.getLogger(__name__)


class PredicateImportError(ImportError):
    """The dotted path of a filter predicate does not name an importable callable."""


class EventFilter(BaseModel):
    """
    Which DataWorks events to wait for.

    Every field is a list of accepted values; an empty list accepts anything. An event matches when
    it passes every non-empty field. Lists are normalised (canonical event types, sorted, without
    duplicates) so the same filter always serializes the same way, which AssetWatcher relies on.

    :param event_types: event codes (``deploy-file``), EventBridge types
        (``dataworks:FileChange:DeployFile``) or legacy names (``instance-status-change``).
    :param workspace_ids: DataWorks workspace (project) ids.
    :param node_ids: node ids; an event about several nodes matches if any of them is listed.
    :param instance_ids: instance ids; likewise.
    :param statuses: instance statuses by name (``SUCCESS``) or event code (``6``).
    :param file_ids: DataStudio file ids.
    :param file_names: glob patterns on the file name (``ods_*``).
    :param table_names: glob patterns on the table name.
    :param operators: ids of the users who did the operation.
    :param extension_point: ``True`` for extension-point events only, ``False`` for regular ones.
    :param predicate: dotted path to a callable ``(DataWorksEvent) -> bool`` in an installed module
        (not a DAG file: the triggerer cannot import those). An exception it raises on an event is
        logged as a warning and counts as "no match".
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_types: tuple[str, ...] = ()
    workspace_ids: tuple[int, ...] = ()
    node_ids: tuple[int, ...] = ()
    instance_ids: tuple[int, ...] = ()
    statuses: tuple[InstanceStatus, ...] = ()
    file_ids: tuple[int, ...] = ()
    file_names: tuple[str, ...] = ()
    table_names: tuple[str, ...] = ()
    operators: tuple[str, ...] = ()
    extension_point: bool | None = None
    predicate: str | None = None

    @field_validator("event_types", mode="before")
    @classmethod
    def _canonical_event_types(cls, value: Any) -> tuple[str, ...]:
        return tuple(sorted({canonical_event_type(str(name)) for name in _as_list(value)}))

    @field_validator("workspace_ids", "node_ids", "instance_ids", "file_ids", mode="before")
    @classmethod
    def _sorted_ids(cls, value: Any) -> tuple[int, ...]:
        return tuple(sorted({int(item) for item in _as_list(value)}))

    @field_validator("statuses", mode="before")
    @classmethod
    def _statuses(cls, value: Any) -> tuple[InstanceStatus, ...]:
        statuses = {InstanceStatus.from_value(item) for item in _as_list(value)}
        return tuple(sorted(statuses, key=lambda status: status.value))

    @field_validator("file_names", "table_names", "operators", mode="before")
    @classmethod
    def _sorted_strings(cls, value: Any) -> tuple[str, ...]:
        return tuple(sorted({str(item).strip() for item in _as_list(value)}))

    @field_validator("predicate")
    @classmethod
    def _dotted_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "." not in value.strip()):
            raise ValueError(
                f"predicate {value!r} must be a dotted path such as 'my_package.checks.is_ready'"
            )
        return value.strip() if value else None

    def to_dict(self) -> dict[str, Any]:
        """Return the filter as a JSON-safe dict without empty fields, keys sorted."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        return {
            key: (list(value) if isinstance(value, tuple) else value) for key, value in sorted(data.items())
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | EventFilter | None) -> EventFilter:
        """Build a filter from :meth:`to_dict` output, or pass a filter through."""
        if isinstance(data, EventFilter):
            return data
        return cls(**dict(data or {}))

    def merged(self, **fields: Any) -> EventFilter:
        """Return a copy with ``fields`` added to the lists (or set, for scalars)."""
        data = self.model_dump()
        for key, value in fields.items():
            if value is None or value == ():
                continue
            if isinstance(data.get(key), tuple):
                data[key] = (*data[key], *_as_list(value))
            else:
                data[key] = value
        return EventFilter(**data)

    def check_predicate(self) -> None:
        """
        Import the predicate now, so a wrong path fails the task before it defers.

        :raises PredicateImportError: naming the path and what to do about it.
        """
        if self.predicate:
            _import_predicate(self.predicate)

    @cached_property
    def _predicate(self) -> EventPredicate | None:
        return _import_predicate(self.predicate) if self.predicate else None

    def matches(self, event: DataWorksEvent) -> bool:
        """Return whether ``event`` passes this filter."""
        if self.event_types and event.event_type not in self.event_types:
            return False
        if self.workspace_ids and event.workspace_id not in self.workspace_ids:
            return False
        if self.node_ids and not set(event.node_ids) & set(self.node_ids):
            return False
        if self.instance_ids and not set(event.instance_ids) & set(self.instance_ids):
            return False
        if self.statuses and event.status not in self.statuses:
            return False
        if self.file_ids and event.file_id not in self.file_ids:
            return False
        if self.file_names and not _glob_any(event.file_name, self.file_names):
            return False
        if self.table_names and not _glob_any(event.table_name, self.table_names):
            return False
        if self.operators and event.operator not in self.operators:
            return False
        if self.extension_point is not None and event.extension_point != self.extension_point:
            return False
        return self._predicate is None or self._ask_predicate(self._predicate, event)

    def _ask_predicate(self, predicate: EventPredicate, event: DataWorksEvent) -> bool:
        # The predicate is user code running in a reader that many triggers share: an exception on
        # one event counts as "no match" for this filter instead of stopping every waiting trigger.
        try:
            return bool(predicate(event))
        except Exception as error:
            log.warning(
                "Event filter predicate %s raised %s on event %s (%s); treating the event as not matching",
                self.predicate,
                type(error).__name__,
                event.message_id,
                event.event_type,
            )
            return False


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | int | InstanceStatus):
        return [value]
    if isinstance(value, Iterable):
        return list(value)
    return [value]


def _glob_any(name: str | None, patterns: Iterable[str]) -> bool:
    return name is not None and any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _import_predicate(path: str) -> EventPredicate:
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        predicate = getattr(module, attribute)
    except (ImportError, AttributeError) as error:
        raise PredicateImportError(
            f"Cannot import the event filter predicate {path!r} ({error}). Put the function in a module "
            "installed in the Airflow environment (the triggerer cannot import DAG files) and give its "
            "dotted path, for example 'my_company.dataworks_checks.is_ready'."
        ) from None
    if not callable(predicate):
        raise PredicateImportError(f"The event filter predicate {path!r} is not callable.")
    return predicate
