"""The DataWorks emulator: model, OpenAPI server, event publisher and their control API in one object."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from airflow_provider_dataworks.local.emulator.model import (
    DEFAULT_RUN_PATH,
    MAX_CONSUMER_GROUPS,
    MAX_SUBSCRIBED_WORKSPACES,
    NOT_RUN,
    OPERATION_OUTCOMES,
    RUNNING,
    SUCCESS,
    TERMINAL_STATUSES,
    WAIT_RESOURCE,
    DataFile,
    EmulatorError,
    Fault,
    Instance,
    Model,
    Node,
    Operation,
    Scheduler,
    Table,
    Workspace,
    business_date_ms,
    format_business_date,
    parse_status,
    to_json,
)
from airflow_provider_dataworks.local.emulator.openapi import OpenApi, node_configuration
from airflow_provider_dataworks.local.emulator.publisher import (
    ENVELOPES,
    EventKind,
    RecordWriter,
    Sink,
    build_envelope,
    encode,
    envelope_id,
    event_kind,
)
from airflow_provider_dataworks.local.emulator.server import EmulatorHttpServer, Gateway

log = logging.getLogger(__name__)

DEMO_WORKSPACE_ID = 10001
DEMO_NODE_IDS = (700000001, 700000002)

_UNSET: Any = object()

#: Event types that exist only as extension points (the operation waits for a verdict).
_EXTENSION_ONLY = frozenset({"delete-file", "run-file", "commit-table", "deploy-table"})
_FILE_EVENTS = ("commit-file", "deploy-file", "delete-file", "run-file")
_TABLE_EVENTS = ("commit-table", "deploy-table")
_NODE_EVENTS = ("node-change-created", "node-change-updated", "node-change-deleted")


class DataWorksEmulator:
    """
    A local DataWorks: the OpenAPI 2020-05-18 over HTTP for the unmodified SDK, and events in Kafka.

    Point the SDK at it with ``Config(access_key_id=emulator.access_key_id,
    access_key_secret=emulator.access_key_secret, endpoint=emulator.endpoint, protocol="http")``.
    Every instance status change publishes an ``instance-status-changes`` event to ``topic`` in the
    chosen envelope, if the subscription covers the workspace and the event type.

    :param host: address to bind; keep it on loopback.
    :param port: TCP port; ``0`` picks a free one (read it from :attr:`port` after :meth:`start`).
    :param kafka_config: librdkafka settings of the broker that receives the events.
    :param topic: the Kafka topic DataWorks writes to.
    :param envelope: ``legacy`` (flat shared-topic envelope) or ``cloudevents`` (EventBridge).
    :param access_key_id: the only AccessKey id the OpenAPI accepts.
    :param access_key_secret: its secret; requests signed with another secret are rejected.
    :param sink: ``sink(topic, key, value)`` receives the records instead of Kafka (unit tests).

    .. note::
        Business dates are midnights in Asia/Shanghai (UTC+8), as epoch milliseconds, like DataWorks
        returns them. The emulator serves one environment: ``ProjectEnv`` must be ``PROD`` or ``DEV``
        and both read the same data. Records are keyed by instance id (instance events) or message id.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        kafka_config: dict[str, Any] | None = None,
        topic: str = "dataworks-events",
        envelope: str = "legacy",
        access_key_id: str = "emulator-access-key",
        access_key_secret: str = "emulator-access-secret",
        sink: Sink | None = None,
    ) -> None:
        if envelope not in ENVELOPES:
            raise ValueError(f"Unknown envelope {envelope!r}; use one of {list(ENVELOPES)}.")
        self._host = host
        self._requested_port = port
        self.topic = topic
        self.envelope = envelope
        self._access_key_id = access_key_id
        self._access_key_secret = access_key_secret
        self.model = Model()
        self._writer = RecordWriter(kafka_config=kafka_config, sink=sink)
        self._openapi = OpenApi(self.model)
        self._publish_lock = threading.RLock()
        self._published: list[dict[str, Any]] = []
        self._extension_timeout: tuple[float, str] | None = None
        self._stopping = threading.Event()
        self._scheduler: Scheduler | None = None
        self._server: EmulatorHttpServer | None = None
        self._server_thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> DataWorksEmulator:
        """Start serving HTTP and running schedules; return ``self``."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._scheduler = Scheduler()
        gateway = Gateway(
            model=self.model, openapi=self._openapi, secret_for=self._secret_for, stopping=self._stopping
        )
        self._server = EmulatorHttpServer(
            (self._host, self._requested_port), gateway=gateway, control=self._control
        )
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="dataworks-emulator-http"
        )
        self._server_thread.daemon = True
        self._server_thread.start()
        log.info(
            "DataWorks emulator listening on %s (topic %s, %s envelope, records to %s)",
            self.url,
            self.topic,
            self.envelope,
            self._writer.target,
        )
        return self

    def stop(self) -> None:
        """Stop schedules, hanging requests and the HTTP server; flush Kafka."""
        self._stopping.set()
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._server_thread is not None:
            self._server_thread.join(timeout=10)
            self._server_thread = None
        self._writer.close()
        log.info("DataWorks emulator stopped")

    def __enter__(self) -> DataWorksEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """Return the TCP port the OpenAPI listens on.

        :raises RuntimeError: the emulator has not been started.
        """
        if self._server is None:
            raise RuntimeError("The DataWorks emulator is not running; call start() first.")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """Return ``host:port``, the SDK's ``Config.endpoint``."""
        return f"{self._host}:{self.port}"

    @property
    def url(self) -> str:
        """Return ``http://host:port``."""
        return f"http://{self.endpoint}"

    @property
    def access_key_id(self) -> str:
        """Return the AccessKey id the OpenAPI accepts."""
        return self._access_key_id

    @property
    def access_key_secret(self) -> str:
        """Return the AccessKey secret the OpenAPI accepts."""
        return self._access_key_secret

    def _secret_for(self, access_key_id: str) -> str | None:
        return self._access_key_secret if access_key_id == self._access_key_id else None

    # -- model -----------------------------------------------------------------------------------

    def add_workspace(
        self,
        *,
        workspace_id: int,
        identifier: str | None = None,
        name: str | None = None,
        visible: bool = True,
        tenant_id: int | None = None,
    ) -> dict[str, Any]:
        """Add or replace a workspace; an invisible one answers ``Forbidden.Access`` to the AccessKey."""
        workspace = Workspace(
            id=int(workspace_id),
            identifier=identifier or f"ws_{workspace_id}",
            name=name or identifier or f"ws_{workspace_id}",
            visible=bool(visible),
        )
        if tenant_id is not None:
            workspace.tenant_id = int(tenant_id)
        self.model.add_workspace(workspace)
        log.info("Emulator workspace %s (%s) added, visible=%s", workspace.id, workspace.identifier, visible)
        return to_json(workspace)

    def set_workspace_visible(self, workspace_id: int, visible: bool) -> dict[str, Any]:
        """Make a workspace visible to the AccessKey or hide it (``Forbidden.Access``)."""
        with self.model.lock:
            workspace = self.model.workspace(workspace_id)
            workspace.visible = bool(visible)
        log.info("Emulator workspace %s visible=%s", workspace_id, visible)
        return to_json(workspace)

    def add_node(
        self,
        *,
        node_id: int,
        workspace_id: int,
        name: str,
        program_type: str = "ODPS_SQL",
        cron: str = "00 00 00 * * ?",
        owner: str | None = None,
        file_id: int | None = None,
        publish: bool = False,
    ) -> dict[str, Any]:
        """Add or replace a node; with ``publish`` also send ``node-change-created``."""
        node = Node(
            id=int(node_id),
            workspace_id=int(workspace_id),
            name=name,
            program_type=program_type,
            cron=cron,
            file_id=file_id,
        )
        if owner:
            node.owner = owner
        self.model.add_node(node)
        log.info("Emulator node %s (%s) added to workspace %s", node.id, name, workspace_id)
        if publish:
            self.publish_node_event(node_id=node.id, event_type="node-change-created")
        return to_json(node)

    def add_file(
        self,
        *,
        workspace_id: int,
        name: str,
        file_id: int | None = None,
        file_type: int = 10,
        owner: str | None = None,
        content: str = "SELECT 1;",
        node_id: int | None = None,
    ) -> dict[str, Any]:
        """Add or replace a DataStudio file."""
        data_file = DataFile(
            id=int(file_id) if file_id is not None else self.model.next_file_id(),
            workspace_id=int(workspace_id),
            name=name,
            file_type=int(file_type),
            content=content,
            node_id=node_id,
        )
        if owner:
            data_file.owner = owner
        self.model.add_file(data_file)
        log.info("Emulator file %s (%s) added to workspace %s", data_file.id, name, workspace_id)
        return to_json(data_file)

    def add_table(
        self,
        *,
        workspace_id: int,
        name: str,
        maxcompute_project: str,
        columns: Sequence[dict[str, Any]] | None = None,
        partition_keys: Sequence[str] = (),
        comment: str = "",
    ) -> dict[str, Any]:
        """Add or replace a MaxCompute table (``TableGuid`` ``odps.<project>.<name>``)."""
        table = Table(
            name=name,
            workspace_id=int(workspace_id),
            maxcompute_project=maxcompute_project,
            partition_keys=list(partition_keys),
            comment=comment,
        )
        if columns:
            table.columns = [dict(column) for column in columns]
        self.model.add_table(table)
        log.info("Emulator table %s added to workspace %s", table.guid, workspace_id)
        return to_json(table)

    def add_instance(
        self,
        *,
        node_id: int,
        business_date: Any = None,
        status: int | str = NOT_RUN,
        instance_id: int | None = None,
        publish: bool = False,
    ) -> dict[str, Any]:
        """Create a node's instance for a business date (default yesterday, as DataWorks does).

        :param business_date: epoch ms, ``yyyy-MM-dd`` or a date; midnight Asia/Shanghai is stored.
        :param publish: also send an ``instance-status-changes`` event for the initial status.
        """
        with self._publish_lock:
            instance = self.model.add_instance(
                node_id=node_id, business_date=business_date, status=status, instance_id=instance_id
            )
            log.info(
                "Emulator instance %s of node %s created for business date %s",
                instance.id,
                node_id,
                format_business_date(instance.bizdate),
            )
            if publish:
                self._publish_status(instance)
            return to_json(instance)

    def instance(self, instance_id: int) -> dict[str, Any]:
        """Return one instance as JSON-safe data."""
        with self.model.lock:
            return to_json(self.model.instance(instance_id))

    def set_instance_status(
        self, instance_id: int, status: int | str, *, publish: bool = True
    ) -> dict[str, Any]:
        """Move an instance to a status (int or OpenAPI name) and publish the change."""
        with self._publish_lock:
            with self.model.lock:
                instance = self.model.set_status(instance_id, status)
                result = to_json(instance)
            log.info("Emulator instance %s is now %s", instance_id, instance.status_name)
            if publish:
                self._publish_status(instance)
            return result

    def _publish_status(self, instance: Instance) -> None:
        # Called with the publish lock held, so events of one instance leave in the order of its changes.
        with self.model.lock:
            body = _instance_body(instance, self.model.workspace(instance.workspace_id).tenant_id)
        self._publish(
            event_kind("instance-status-changes"),
            workspace_id=instance.workspace_id,
            body=body,
            block_business=False,
            key=str(instance.id),
        )

    def play_instance(
        self,
        instance_id: int,
        *,
        statuses: Iterable[int | str] | None = None,
        delay: float = 0.0,
        step: float = 1.0,
    ) -> list[int]:
        """Move an instance through statuses in the background, one every ``step`` seconds after ``delay``.

        A new plan for the same instance replaces the old one. The default path is
        WAIT_TIME -> WAIT_RESOURCE -> RUNNING -> SUCCESS.

        :return: the planned status codes.
        """
        self.model.instance(instance_id)
        path = [parse_status(status) for status in (statuses if statuses is not None else DEFAULT_RUN_PATH)]
        if delay < 0 or step < 0:
            raise EmulatorError("delay and step must not be negative.")
        scheduler = self._require_scheduler()
        scheduler.plan(
            f"instance-{instance_id}",
            [(delay + index * step, self._status_step(instance_id, code)) for index, code in enumerate(path)],
        )
        log.info(
            "Emulator instance %s will move through %s (delay %ss, step %ss)", instance_id, path, delay, step
        )
        return path

    def _status_step(self, instance_id: int, status: int) -> Any:
        def run() -> None:
            self.set_instance_status(instance_id, status, publish=True)

        return run

    def instance_plan_pending(self, instance_id: int) -> int:
        """Return how many planned status changes of an instance have not happened yet."""
        return self._require_scheduler().pending(f"instance-{instance_id}")

    def rerun_instance(
        self,
        instance_id: int,
        *,
        outcome: int | str = SUCCESS,
        delay: float = 0.0,
        step: float = 1.0,
    ) -> list[int]:
        """Rerun a finished instance: publish ``rerun-instance``, then WAIT_RESOURCE -> RUNNING -> outcome.

        :raises EmulatorError: the instance has not finished (DataWorks reruns only finished instances).
        """
        final = parse_status(outcome)
        if final not in TERMINAL_STATUSES:
            raise EmulatorError(f"A rerun ends in SUCCESS or FAILURE, not {outcome!r}.")
        with self.model.lock:
            instance = self.model.instance(instance_id)
            if instance.status not in TERMINAL_STATUSES:
                raise EmulatorError(
                    f"The instance {instance_id} is {instance.status_name}; only a finished instance "
                    "(SUCCESS or FAILURE) can be rerun."
                )
            workspace = self.model.workspace(instance.workspace_id)
        body = {
            "operator": workspace.owner,
            "projectId": workspace.id,
            "projectType": "PROD",
            "taskIds": [instance.id],
            "tenantId": workspace.tenant_id,
        }
        self._publish(
            event_kind("rerun-instance"), workspace_id=workspace.id, body=body, block_business=False
        )
        return self.play_instance(
            instance_id, statuses=[WAIT_RESOURCE, RUNNING, final], delay=delay, step=step
        )

    # -- publishing ------------------------------------------------------------------------------

    def publish_instance(
        self,
        *,
        node_id: int,
        status: int | str,
        business_date: Any = None,
        workspace_id: int | None = None,
    ) -> dict[str, Any]:
        """Create or update the node's instance for a business date, set its status and publish it."""
        with self._publish_lock:
            node = self.model.node(node_id)
            if workspace_id is not None and int(workspace_id) != node.workspace_id:
                raise EmulatorError(
                    f"The node {node_id} belongs to workspace {node.workspace_id}, not {workspace_id}."
                )
            existing = self.model.find_instance(node.id, business_date_ms(business_date))
            instance_id = (
                existing.id
                if existing
                else self.add_instance(node_id=node.id, business_date=business_date)["id"]
            )
            return self.set_instance_status(instance_id, status, publish=True)

    def publish_file_event(
        self,
        *,
        file_id: int,
        event_type: str = "commit-file",
        extension: bool | None = None,
        change_type: str = "1",
        message_id: str | None = None,
    ) -> str | None:
        """Publish a file event; an extension-point copy holds an operation until a verdict arrives.

        :param extension: ``True`` for the extension-point copy (``blockBusiness``); the default is
            ``False`` for commit-file / deploy-file and ``True`` for delete-file / run-file.
        :return: the message id, or ``None`` when the subscription does not cover the event.
        """
        if event_type not in _FILE_EVENTS:
            raise EmulatorError(f"{event_type!r} is not a file event; use one of {list(_FILE_EVENTS)}.")
        kind = event_kind(event_type)
        block = event_type in _EXTENSION_ONLY if extension is None else bool(extension)
        with self.model.lock:
            data_file = self.model.file(file_id)
            workspace = self.model.workspace(data_file.workspace_id)
            node = self.model.nodes.get(data_file.node_id or -1)
        body = _file_body(data_file, workspace, event_type, block, change_type)
        detail = _file_event_detail(data_file, node, event_type, change_type)
        return self._publish(
            kind,
            workspace_id=workspace.id,
            body=body,
            block_business=block,
            message_id=message_id,
            event_detail=detail,
        )

    def publish_table_event(
        self,
        *,
        workspace_id: int,
        table_name: str,
        event_type: str = "commit-table",
        maxcompute_project: str | None = None,
        message_id: str | None = None,
    ) -> str | None:
        """Publish a table extension-point event (MaxCompute tables only, as in DataWorks).

        :return: the message id, or ``None`` when the subscription does not cover the event.
        """
        if event_type not in _TABLE_EVENTS:
            raise EmulatorError(f"{event_type!r} is not a table event; use one of {list(_TABLE_EVENTS)}.")
        with self.model.lock:
            workspace = self.model.workspace(workspace_id)
            candidates = [
                t
                for t in self.model.tables.values()
                if t.name == table_name and t.workspace_id == workspace.id
            ]
            if maxcompute_project:
                candidates = [t for t in candidates if t.maxcompute_project == maxcompute_project]
            table = candidates[0] if candidates else None
        project = maxcompute_project or (table.maxcompute_project if table else workspace.identifier)
        body = {
            "operator": workspace.owner,
            "projectId": workspace.id,
            "tenantId": workspace.tenant_id,
            "extensionBizId": _extension_biz_id(),
            "tableName": table_name,
            "tableType": "ODPS",
            "maxComputeProject": project,
        }
        detail = {"TableModel": _table_model(table, table_name)}
        return self._publish(
            event_kind(event_type),
            workspace_id=workspace.id,
            body=body,
            block_business=True,
            message_id=message_id,
            event_detail=detail,
        )

    def publish_node_event(self, *, node_id: int, event_type: str = "node-change-updated") -> str | None:
        """Publish ``node-change-created`` / ``-updated`` / ``-deleted`` for a node."""
        if event_type not in _NODE_EVENTS:
            raise EmulatorError(f"{event_type!r} is not a node event; use one of {list(_NODE_EVENTS)}.")
        with self.model.lock:
            node = self.model.node(node_id)
            workspace = self.model.workspace(node.workspace_id)
        body = {
            "nodeName": node.name,
            "programType": node.program_type,
            "cronExpress": node.cron,
            "schedulerType": node.scheduler_type,
            "ownerId": node.owner,
            "priority": node.priority,
            "baselineId": 0,
            "repeatability": True,
            "blockBusiness": False,
            "operator": node.owner,
            "modifyTime": node.modify_time,
            "createTime": node.create_time,
            "tenantId": workspace.tenant_id,
            "nodeId": node.id,
            "projectId": workspace.id,
        }
        return self._publish(
            event_kind(event_type), workspace_id=workspace.id, body=body, block_business=False
        )

    def publish_raw(self, value: bytes | str, *, key: bytes | str | None = None) -> None:
        """Write any bytes as a record value, ignoring the subscription (for malformed-input tests)."""
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        raw_key = key.encode("utf-8") if isinstance(key, str) else key
        with self._publish_lock:
            self._writer.write(self.topic, raw_key, raw)
            self._published.append({"topic": self.topic, "key": _text(raw_key), "raw": _text(raw)})
        log.info("Emulator published a raw record of %d bytes to %s", len(raw), self.topic)

    def published(self) -> list[dict[str, Any]]:
        """Return every record written so far: ``topic``, ``key`` and the ``envelope`` (or ``raw`` text)."""
        with self._publish_lock:
            return [dict(item) for item in self._published]

    def _publish(
        self,
        kind: EventKind,
        *,
        workspace_id: int | None,
        body: dict[str, Any],
        block_business: bool,
        key: str | None = None,
        message_id: str | None = None,
        event_detail: dict[str, Any] | None = None,
    ) -> str | None:
        with self._publish_lock:
            with self.model.lock:
                covered = self.model.subscription.covers(kind.code, workspace_id)
            if not covered:
                log.info(
                    "Emulator skipped %s of workspace %s: the subscription does not cover it",
                    kind.code,
                    workspace_id,
                )
                return None
            document = build_envelope(
                self.envelope, kind=kind, body=body, block_business=block_business, message_id=message_id
            )
            new_id = envelope_id(document)
            self._register(new_id, kind, workspace_id, block_business, event_detail)
            try:
                self._writer.write(self.topic, (key or new_id).encode("utf-8"), encode(document))
            except Exception:
                self._unregister(new_id)
                raise
            self._published.append({"topic": self.topic, "key": key or new_id, "envelope": document})
            if block_business:
                self._plan_expiry(new_id)
        log.info(
            "Emulator published %s %s for workspace %s (message %s)",
            "extension-point" if block_business else "event",
            kind.code,
            workspace_id,
            new_id,
        )
        return new_id

    def _register(
        self,
        message_id: str,
        kind: EventKind,
        workspace_id: int | None,
        block_business: bool,
        event_detail: dict[str, Any] | None,
    ) -> None:
        # Registered before the record is written: a fast consumer may answer before write() returns.
        with self.model.lock:
            if event_detail is not None and workspace_id is not None:
                self.model.event_details[message_id] = {
                    "workspace_id": workspace_id,
                    "EventDetail": event_detail,
                }
            if block_business:
                self.model.operations[message_id] = Operation(
                    message_id=message_id, event_type=kind.code, workspace_id=workspace_id
                )

    def _plan_expiry(self, message_id: str) -> None:
        if self._extension_timeout is None or self._scheduler is None:
            return
        seconds, check_result = self._extension_timeout

        def expire() -> None:
            if self.model.expire_operation(message_id, check_result) is not None:
                log.info(
                    "Emulator operation %s timed out waiting for a verdict: %s", message_id, check_result
                )

        self._scheduler.plan(f"operation-{message_id}", [(seconds, expire)])

    def _unregister(self, message_id: str) -> None:
        with self.model.lock:
            self.model.event_details.pop(message_id, None)
            self.model.operations.pop(message_id, None)

    # -- subscription, faults, verdicts --------------------------------------------------------

    def set_subscription(
        self,
        *,
        enabled: bool = _UNSET,
        workspaces: Iterable[int] | None = _UNSET,
        event_types: Iterable[str] | None = _UNSET,
        consumer_groups: Iterable[str] = _UNSET,
    ) -> dict[str, Any]:
        """Change the console configuration of the subscription; arguments left out stay as they are.

        :param enabled: the console switch; off stops every event.
        :param workspaces: workspace ids that feed the topic (at most 5); ``None`` means all.
        :param event_types: event types (``eventCode``) that feed the topic; ``None`` means all.
        :param consumer_groups: names of the extra consumer groups (at most 5; registry only).
        """
        with self.model.lock:
            current = self.model.subscription
            if workspaces is not _UNSET and workspaces is not None:
                chosen = {int(w) for w in workspaces}
                if len(chosen) > MAX_SUBSCRIBED_WORKSPACES:
                    raise EmulatorError(
                        f"A DataWorks topic takes at most {MAX_SUBSCRIBED_WORKSPACES} workspaces, "
                        f"not {len(chosen)}."
                    )
                current.workspaces = chosen
            elif workspaces is None:
                current.workspaces = None
            if event_types is not _UNSET:
                current.event_types = None if event_types is None else {str(t) for t in event_types}
            if consumer_groups is not _UNSET:
                groups = list(dict.fromkeys(str(g) for g in consumer_groups))
                if len(groups) > MAX_CONSUMER_GROUPS:
                    raise EmulatorError(
                        f"DataWorks allows at most {MAX_CONSUMER_GROUPS} extra consumer groups, "
                        f"not {len(groups)}."
                    )
                current.consumer_groups = groups
            if enabled is not _UNSET:
                current.enabled = bool(enabled)
            result = current.to_dict()
        log.info("Emulator subscription is now %s", result)
        return result

    def set_extension_timeout(self, seconds: float | None, *, outcome: str = "OK") -> dict[str, Any]:
        """Resolve extension-point operations that get no verdict within ``seconds`` (``None``: wait forever).

        DataWorks documents neither the wait nor the outcome; when extensions stop working, checks
        already triggered resolve as passed, hence the default ``OK``. Applies to events published later.

        :param outcome: ``OK`` (passed), ``WARN`` (warned) or ``FAIL`` (blocked).
        """
        check_result = outcome.upper()
        if check_result not in OPERATION_OUTCOMES:
            raise EmulatorError(f"outcome {outcome!r} is not valid; use OK, WARN or FAIL.")
        if seconds is not None and seconds <= 0:
            raise EmulatorError("The extension timeout must be positive, or None to wait forever.")
        self._extension_timeout = None if seconds is None else (float(seconds), check_result)
        log.info("Emulator extension timeout is now %s s (outcome %s)", seconds, check_result)
        return {"seconds": seconds, "outcome": check_result}

    def subscription(self) -> dict[str, Any]:
        """Return the subscription configuration."""
        with self.model.lock:
            return self.model.subscription.to_dict()

    def inject_fault(
        self,
        action: str = "*",
        kind: str = "throttle",
        *,
        count: int = 1,
        retry_after: int = 1000,
        seconds: float = 5.0,
        http_status: int = 500,
        code: str = "InternalError",
    ) -> dict[str, Any]:
        """Make the next ``count`` calls of an OpenAPI action (``*`` = any) fail.

        :param kind: ``throttle`` (HTTP 429 ``Throttling.Api`` with ``x-acs-retry-after``), ``error``
            (``http_status``, default 500 ``InternalError``) or ``hang`` (answer only after ``seconds``).
        :param retry_after: milliseconds, the unit the SDK reads from ``x-acs-retry-after``.
        """
        fault = Fault(
            action=action,
            kind=kind,
            remaining=int(count),
            retry_after=int(retry_after),
            seconds=float(seconds),
            http_status=int(http_status),
            code=code,
        )
        with self.model.lock:
            self.model.faults.append(fault)
        log.info("Emulator will fail %d call(s) of %s with %s", count, action, kind)
        return to_json(fault)

    def faults(self) -> list[dict[str, Any]]:
        """Return planned faults with how many calls each still fails (``remaining``) and has failed."""
        with self.model.lock:
            return to_json(self.model.faults)

    def clear_faults(self) -> None:
        """Drop every planned fault."""
        with self.model.lock:
            self.model.faults.clear()
        log.info("Emulator faults cleared")

    def answered(self, action: str) -> int:
        """Return how many calls of an OpenAPI action were answered successfully (for tests to wait on)."""
        with self.model.lock:
            return self.model.answered[action]

    def verdicts(self) -> list[dict[str, Any]]:
        """Return the extension verdicts received: message id, extension code, check result, tip, action."""
        with self.model.lock:
            return to_json(self.model.verdicts)

    def operations(self) -> list[dict[str, Any]]:
        """Return operations held by extension-point events (pending, passed, warned or blocked)."""
        with self.model.lock:
            return to_json(list(self.model.operations.values()))

    def state(self) -> dict[str, Any]:
        """Return everything the emulator holds, JSON-safe."""
        snapshot = self.model.snapshot()
        snapshot.update(topic=self.topic, envelope=self.envelope, records=self._writer.target)
        with self._publish_lock:
            snapshot["published_count"] = len(self._published)
        return snapshot

    # -- demo ------------------------------------------------------------------------------------

    def seed_demo(self) -> dict[str, Any]:
        """Add the demo workspace 10001 ``demo_ws`` with nodes 700000001 ``ods_orders_di`` and
        700000002 ``dwd_orders_di``, their files and tables."""
        self.add_workspace(workspace_id=DEMO_WORKSPACE_ID, identifier="demo_ws", name="Demo workspace")
        for node_id, file_id, name, cron in (
            (DEMO_NODE_IDS[0], 500000001, "ods_orders_di", "00 30 00 * * ?"),
            (DEMO_NODE_IDS[1], 500000002, "dwd_orders_di", "00 00 01 * * ?"),
        ):
            self.add_node(
                node_id=node_id, workspace_id=DEMO_WORKSPACE_ID, name=name, cron=cron, file_id=file_id
            )
            self.add_file(
                workspace_id=DEMO_WORKSPACE_ID,
                name=name,
                file_id=file_id,
                node_id=node_id,
                content=f"INSERT OVERWRITE TABLE {name} PARTITION (ds='${{bizdate}}') SELECT 1;",
            )
            self.add_table(
                workspace_id=DEMO_WORKSPACE_ID,
                name=name,
                maxcompute_project="mc_demo_prod",
                columns=[{"name": "order_id", "type": "BIGINT"}, {"name": "amount", "type": "DECIMAL"}],
                partition_keys=["ds"],
            )
        return {"workspace": DEMO_WORKSPACE_ID, "nodes": list(DEMO_NODE_IDS)}

    def play_demo(self, *, delay: float = 20.0, step: float = 2.0) -> dict[str, Any]:
        """Run today's instance of node 700000001 (business date yesterday) to SUCCESS.

        Seeds the demo data if needed. The instance is created in NOT_RUN (or reset to it, without an
        event), then WAIT_TIME, WAIT_RESOURCE, RUNNING and SUCCESS follow: the first after ``delay``
        seconds, the others ``step`` seconds apart, each published.
        """
        if DEMO_NODE_IDS[0] not in self.model.nodes:
            self.seed_demo()
        bizdate = business_date_ms(None)
        existing = self.model.find_instance(DEMO_NODE_IDS[0], bizdate)
        if existing is None:
            instance = self.add_instance(node_id=DEMO_NODE_IDS[0], business_date=bizdate)
        else:
            instance = self.set_instance_status(existing.id, NOT_RUN, publish=False)
        self.play_instance(instance["id"], delay=delay, step=step)
        return self.instance(instance["id"])

    # -- control API -----------------------------------------------------------------------------

    def _require_scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise RuntimeError(
                "The DataWorks emulator is not running; call start() before planning status changes."
            )
        return self._scheduler

    def _control(self, method: str, parts: list[str], payload: Any) -> tuple[int, Any]:
        from airflow_provider_dataworks.local.emulator.control import dispatch

        return dispatch(self, method, parts, payload)


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode("ascii")


def _extension_biz_id() -> str:
    return f"ext-biz-{uuid.uuid4().hex[:12]}"


def _instance_body(instance: Instance, tenant_id: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "taskId": instance.id,
        "nodeId": instance.node_id,
        "dagId": instance.dag_id,
        "dagType": instance.dag_type,
        "taskType": instance.task_type,
        "status": instance.status,
        "appId": instance.workspace_id,
        "tenantId": tenant_id,
        "opCode": 61 if instance.status in TERMINAL_STATUSES else 31,
        "flowId": instance.flow_id,
        "beginWaitTimeTime": instance.begin_wait_time_time,
        "beginWaitResTime": instance.begin_wait_res_time,
        "beginRunningTime": instance.begin_running_time,
        "finishTime": instance.finish_time,
        "createTime": instance.create_time,
        "modifyTime": instance.modify_time,
    }
    # DataWorks leaves out the times of stages the instance has not reached yet.
    return {name: value for name, value in body.items() if value is not None}


def _file_body(
    data_file: DataFile, workspace: Workspace, event_type: str, block: bool, change_type: str
) -> dict[str, Any]:
    created = dt.datetime.fromtimestamp(data_file.create_time / 1000, dt.timezone(dt.timedelta(hours=8)))
    body: dict[str, Any] = {
        "fileId": data_file.id,
        "fileName": data_file.name,
        "fileType": data_file.file_type,
        "fileOwner": data_file.owner,
        "operator": data_file.owner,
        "fileCreateTime": created.strftime("%Y-%m-%d %H:%M:%S"),
        "projectId": workspace.id,
        "tenantId": workspace.tenant_id,
        "blockBusiness": block,
        "resourceType": 1,
    }
    if block:
        body["extensionBizId"] = _extension_biz_id()
    if event_type in ("commit-file", "deploy-file"):
        body.update(
            changeType=change_type, fileVersion=data_file.version, dataSourceName=data_file.data_source_name
        )
    if data_file.node_id is not None:
        body["nodeId"] = data_file.node_id
    return body


def _file_event_detail(
    data_file: DataFile, node: Node | None, event_type: str, change_type: str
) -> dict[str, Any]:
    if event_type == "run-file":
        return {
            "FileExecutionCommand": {
                "Content": data_file.content,
                "DataSourceName": data_file.data_source_name,
                "FileId": data_file.id,
                "FileType": data_file.file_type,
            }
        }
    properties = {
        "BusinessId": data_file.business_id,
        "CurrentVersion": data_file.version,
        "DataSourceName": data_file.data_source_name,
        "FolderId": data_file.folder_id,
        "Owner": data_file.owner,
        "ParentFileId": 0,
    }
    if event_type == "delete-file":
        return {
            "DeletedFile": {
                **properties,
                "Content": data_file.content,
                "FileId": data_file.id,
                "FileName": data_file.name,
                "FileType": data_file.file_type,
                "NodeId": data_file.node_id,
                "UseType": "NORMAL",
            }
        }
    return {
        "CommittedFile": {
            "ChangeType": {"0": "CREATE", "1": "UPDATE", "2": "DELETE"}.get(change_type, "UPDATE"),
            "Comment": "",
            "Committor": data_file.owner,
            "Content": data_file.content,
            "FileId": data_file.id,
            "FileName": data_file.name,
            "FileType": data_file.file_type,
            "NodeId": data_file.node_id,
            "UseType": "NORMAL",
            "FilePropertyContent": properties,
            "NodeConfiguration": node_configuration(node),
        }
    }


def _table_model(table: Table | None, table_name: str) -> dict[str, Any]:
    columns = table.columns if table else []
    partitions = set(table.partition_keys) if table else set()
    return {
        "TableName": table_name,
        "Comment": table.comment if table else "",
        "DataSourceName": "odps_first",
        "Env": "DEV",
        "LifeCycle": table.lifecycle if table else 0,
        "Location": "",
        "Columns": [
            {
                "ColumnName": column.get("name"),
                "ColumnType": column.get("type"),
                "Comment": column.get("comment", ""),
                "IsPartitionColumn": False,
            }
            for column in columns
        ]
        + [
            {"ColumnName": key, "ColumnType": "STRING", "Comment": "", "IsPartitionColumn": True}
            for key in sorted(partitions)
        ],
    }


__all__ = ["DEMO_NODE_IDS", "DEMO_WORKSPACE_ID", "DataWorksEmulator"]
