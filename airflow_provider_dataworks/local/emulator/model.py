"""In-memory DataWorks of the emulator: workspaces, nodes, instances, files, tables, subscription, faults."""

from __future__ import annotations

import collections
import copy
import datetime as dt
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: DataWorks runs its scheduler in China Standard Time; business dates are midnights there.
#: China has no daylight saving time, so a fixed offset is exact and needs no tz database.
BUSINESS_TZ = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")

DEFAULT_TENANT_ID = 200000000000001
DEFAULT_OWNER = "1900000000000001"

NOT_RUN = 1
WAIT_TIME = 2
WAIT_RESOURCE = 3
RUNNING = 4
FAILURE = 5
SUCCESS = 6
CHECKING = 7
CHECKING_CONDITION = 8
WAIT_TRIGGER = 9

#: Integer status used in events -> string used by the OpenAPI (reference §6.1).
STATUS_NAMES: dict[int, str] = {
    NOT_RUN: "NOT_RUN",
    WAIT_TIME: "WAIT_TIME",
    WAIT_RESOURCE: "WAIT_RESOURCE",
    RUNNING: "RUNNING",
    FAILURE: "FAILURE",
    SUCCESS: "SUCCESS",
    CHECKING: "CHECKING",
    CHECKING_CONDITION: "CHECKING_CONDITION",
    WAIT_TRIGGER: "WAIT_TRIGGER",
}
TERMINAL_STATUSES = frozenset({FAILURE, SUCCESS})

#: The path a freshly generated instance takes to success.
DEFAULT_RUN_PATH: tuple[int, ...] = (WAIT_TIME, WAIT_RESOURCE, RUNNING, SUCCESS)

#: DataWorks lets one shared topic carry at most five workspaces and five extra consumer groups.
MAX_SUBSCRIBED_WORKSPACES = 5
MAX_CONSUMER_GROUPS = 5

_DAG_TYPE_NAMES = {0: "DAILY", 1: "MANUAL", 2: "SMOKE_TEST", 3: "SUPPLY_DATA", 4: "MANUAL_FLOW"}
_TASK_TYPE_NAMES = {0: "NORMAL", 1: "MANUAL", 2: "PAUSE", 3: "SKIP"}


class EmulatorError(Exception):
    """A request to the emulator names something that does not exist or is not allowed."""

    def __init__(self, message: str, *, code: str = "InvalidParameter", http_status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status


def now_ms() -> int:
    """Return the current time in epoch milliseconds."""
    return int(time.time() * 1000)


def parse_status(value: int | str) -> int:
    """Return the integer status for an int (0 counts as NOT_RUN) or an OpenAPI name like ``SUCCESS``.

    :param value: ``6``, ``"6"``, ``"SUCCESS"`` or ``"SUCCESS(6)"``.
    """
    if isinstance(value, str):
        text = value.strip().upper()
        if text.isdigit():
            value = int(text)
        else:
            name = text.split("(", 1)[0]
            for code, known in STATUS_NAMES.items():
                if known == name:
                    return code
            raise EmulatorError(
                f"Unknown instance status {value!r}; use one of {sorted(STATUS_NAMES.values())}."
            )
    if value == 0:
        return NOT_RUN
    if value not in STATUS_NAMES:
        raise EmulatorError(f"Unknown instance status {value!r}; use an integer from 1 to 9.")
    return int(value)


def business_date_ms(value: int | str | dt.date | dt.datetime | None = None) -> int:
    """Return the business date as epoch ms at 00:00 Asia/Shanghai, like GetInstance ``Bizdate``.

    :param value: epoch ms, ``"yyyy-MM-dd"``, ``"yyyy-MM-dd HH:mm:ss"``, ``"yyyyMMdd"``, a date or datetime;
        ``None`` means yesterday, the business date of today's scheduled instances.
    """
    if value is None:
        day = dt.datetime.now(BUSINESS_TZ).date() - dt.timedelta(days=1)
    elif isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=BUSINESS_TZ)
        day = aware.astimezone(BUSINESS_TZ).date()
    elif isinstance(value, dt.date):
        day = value
    elif isinstance(value, int) or (isinstance(value, str) and value.isdigit() and len(value) > 8):
        day = dt.datetime.fromtimestamp(int(value) / 1000, BUSINESS_TZ).date()
    else:
        day = _parse_day(str(value))
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=BUSINESS_TZ).timestamp() * 1000)


def _parse_day(text: str) -> dt.date:
    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text.strip(), pattern).date()
        except ValueError:
            continue
    raise EmulatorError(f"Cannot read business date {text!r}; use 'yyyy-MM-dd' or 'yyyy-MM-dd HH:mm:ss'.")


def format_business_date(epoch_ms: int) -> str:
    """Return ``yyyy-MM-dd HH:mm:ss`` in Asia/Shanghai, the form ListInstances takes as ``Bizdate``."""
    return dt.datetime.fromtimestamp(epoch_ms / 1000, BUSINESS_TZ).strftime("%Y-%m-%d %H:%M:%S")


def cycle_time_ms(bizdate_ms: int, cron: str) -> int:
    """Return when a daily node's instance is due: the day after the business date at the cron's time."""
    fields = cron.split()
    try:
        second, minute, hour = (int(fields[0]), int(fields[1]), int(fields[2]))
    except (IndexError, ValueError):
        second, minute, hour = 0, 0, 0
    return bizdate_ms + 86_400_000 + ((hour * 60 + minute) * 60 + second) * 1000


@dataclass
class Workspace:
    """A DataWorks workspace (``ProjectId`` in the OpenAPI, ``appId`` in instance events)."""

    id: int
    identifier: str
    name: str
    visible: bool = True
    tenant_id: int = DEFAULT_TENANT_ID
    owner: str = DEFAULT_OWNER
    description: str = ""
    mode: int = 3
    create_time: int = field(default_factory=now_ms)


@dataclass
class Node:
    """A scheduled node in Operation Center."""

    id: int
    workspace_id: int
    name: str
    program_type: str = "ODPS_SQL"
    cron: str = "00 00 00 * * ?"
    owner: str = DEFAULT_OWNER
    scheduler_type: str = "NORMAL"
    file_id: int | None = None
    priority: int = 1
    description: str = ""
    resource_group: str = "group_default"
    create_time: int = field(default_factory=now_ms)
    modify_time: int = field(default_factory=now_ms)


@dataclass
class Instance:
    """One run of a node for one business date."""

    id: int
    node_id: int
    workspace_id: int
    dag_id: int
    bizdate: int
    cyc_time: int
    status: int = NOT_RUN
    dag_type: int = 0
    task_type: int = 0
    flow_id: int = 1
    owner: str = DEFAULT_OWNER
    create_time: int = field(default_factory=now_ms)
    modify_time: int = field(default_factory=now_ms)
    begin_wait_time_time: int | None = None
    begin_wait_res_time: int | None = None
    begin_running_time: int | None = None
    finish_time: int | None = None

    @property
    def status_name(self) -> str:
        """Return the OpenAPI name of the status, e.g. ``SUCCESS``."""
        return STATUS_NAMES[self.status]

    @property
    def dag_type_name(self) -> str:
        """Return the OpenAPI name of the DAG type, e.g. ``DAILY``."""
        return _DAG_TYPE_NAMES.get(self.dag_type, str(self.dag_type))

    @property
    def task_type_name(self) -> str:
        """Return the OpenAPI name of the scheduling type, e.g. ``NORMAL``."""
        return _TASK_TYPE_NAMES.get(self.task_type, str(self.task_type))


@dataclass
class DataFile:
    """A DataStudio file (the code behind a node)."""

    id: int
    workspace_id: int
    name: str
    file_type: int = 10
    owner: str = DEFAULT_OWNER
    content: str = "SELECT 1;"
    node_id: int | None = None
    version: int = 1
    data_source_name: str = "odps_first"
    folder_id: str = "folder-emulator"
    business_id: int = 1
    create_time: int = field(default_factory=now_ms)
    modify_time: int = field(default_factory=now_ms)


@dataclass
class Table:
    """A MaxCompute table known to Data Map."""

    name: str
    workspace_id: int
    maxcompute_project: str
    columns: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "id", "type": "BIGINT"}])
    partition_keys: list[str] = field(default_factory=list)
    comment: str = ""
    lifecycle: int = 0
    owner: str = DEFAULT_OWNER
    create_time: int = field(default_factory=now_ms)

    @property
    def guid(self) -> str:
        """Return the Data Map ``TableGuid``: ``odps.<maxcompute project>.<table>``."""
        return f"odps.{self.maxcompute_project}.{self.name}"


@dataclass
class Subscription:
    """The console configuration of the event subscription (no public API exists for it).

    ``workspaces`` / ``event_types`` of ``None`` cover everything, the emulator's convenient default.
    """

    enabled: bool = True
    workspaces: set[int] | None = None
    event_types: set[str] | None = None
    consumer_groups: list[str] = field(default_factory=list)

    def covers(self, event_type: str, workspace_id: int | None) -> bool:
        """Return whether an event of this type from this workspace feeds the topic."""
        if not self.enabled:
            return False
        if self.event_types is not None and event_type not in self.event_types:
            return False
        return self.workspaces is None or workspace_id is None or workspace_id in self.workspaces

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe view."""
        return {
            "enabled": self.enabled,
            "workspaces": None if self.workspaces is None else sorted(self.workspaces),
            "event_types": None if self.event_types is None else sorted(self.event_types),
            "consumer_groups": list(self.consumer_groups),
        }


@dataclass
class Verdict:
    """An extension-point verdict received through the OpenAPI."""

    message_id: str
    extension_code: str
    check_result: str
    tip: str
    action: str
    received_at: int = field(default_factory=now_ms)


@dataclass
class Operation:
    """A DataWorks operation held by an extension-point event until a verdict arrives."""

    message_id: str
    event_type: str
    workspace_id: int | None
    status: str = "pending"
    created_at: int = field(default_factory=now_ms)
    resolved_at: int | None = None
    check_result: str | None = None
    timed_out: bool = False


#: Check result of a verdict -> what happens to the held operation.
OPERATION_OUTCOMES = {"OK": "passed", "WARN": "warned", "FAIL": "blocked"}

_FAULT_KINDS = ("throttle", "error", "hang")


@dataclass
class Fault:
    """A planned failure of the next ``remaining`` OpenAPI calls of ``action`` (``*`` = any action)."""

    action: str
    kind: str
    remaining: int = 1
    retry_after: int = 1000
    seconds: float = 5.0
    http_status: int = 500
    code: str = "InternalError"
    served: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _FAULT_KINDS:
            raise EmulatorError(f"Unknown fault kind {self.kind!r}; use one of {list(_FAULT_KINDS)}.")
        if self.remaining < 1:
            raise EmulatorError("A fault needs count >= 1.")
        if self.kind == "throttle" and self.retry_after < 1:
            raise EmulatorError("A throttle fault needs retry_after >= 1 (milliseconds).")


def to_json(obj: Any) -> Any:
    """Return a JSON-safe copy of a model object, list or dict."""
    if isinstance(obj, list | tuple):
        return [to_json(item) for item in obj]
    if isinstance(obj, dict):
        return {key: to_json(value) for key, value in obj.items()}
    if isinstance(obj, Table):
        return {**asdict(obj), "guid": obj.guid}
    if isinstance(obj, Instance):
        return {**asdict(obj), "status_name": obj.status_name}
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    return obj


class Model:
    """The emulator's DataWorks state; every method is safe to call from any thread."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.workspaces: dict[int, Workspace] = {}
        self.nodes: dict[int, Node] = {}
        self.instances: dict[int, Instance] = {}
        self.files: dict[int, DataFile] = {}
        self.tables: dict[str, Table] = {}
        self.subscription = Subscription()
        self.verdicts: list[Verdict] = []
        self.operations: dict[str, Operation] = {}
        self.event_details: dict[str, dict[str, Any]] = {}
        self.faults: list[Fault] = []
        self.answered: collections.Counter[str] = collections.Counter()
        self._instance_ids = itertools.count(900000001)
        self._dag_ids = itertools.count(800000001)
        self._file_ids = itertools.count(500000001)

    def add_workspace(self, workspace: Workspace) -> Workspace:
        """Add or replace a workspace."""
        with self.lock:
            self.workspaces[workspace.id] = workspace
            return workspace

    def workspace(self, workspace_id: int) -> Workspace:
        """Return a workspace or raise the error DataWorks gives for an unknown one."""
        with self.lock:
            found = self.workspaces.get(int(workspace_id))
        if found is None:
            raise EmulatorError(
                f"The workspace {workspace_id} does not exist.",
                code="Invalid.Tenant.ProjectNotExists",
            )
        return found

    def add_node(self, node: Node) -> Node:
        """Add or replace a node of a known workspace."""
        with self.lock:
            self.workspace(node.workspace_id)
            self.nodes[node.id] = node
            return node

    def node(self, node_id: int) -> Node:
        """Return a node or raise ``Invalid.Node.NotExists``."""
        with self.lock:
            found = self.nodes.get(int(node_id))
        if found is None:
            raise EmulatorError(f"The node {node_id} does not exist.", code="Invalid.Node.NotExists")
        return found

    def add_file(self, data_file: DataFile) -> DataFile:
        """Add or replace a file of a known workspace."""
        with self.lock:
            self.workspace(data_file.workspace_id)
            self.files[data_file.id] = data_file
            return data_file

    def next_file_id(self) -> int:
        """Return an unused file id."""
        with self.lock:
            while True:
                candidate = next(self._file_ids)
                if candidate not in self.files:
                    return candidate

    def file(self, file_id: int) -> DataFile:
        """Return a file or raise ``Invalid.File.NotExists``."""
        with self.lock:
            found = self.files.get(int(file_id))
        if found is None:
            raise EmulatorError(f"The file {file_id} does not exist.", code="Invalid.File.NotExists")
        return found

    def add_table(self, table: Table) -> Table:
        """Add or replace a table of a known workspace."""
        with self.lock:
            self.workspace(table.workspace_id)
            self.tables[table.guid] = table
            return table

    def add_instance(
        self,
        *,
        node_id: int,
        business_date: int | str | dt.date | None = None,
        status: int | str = NOT_RUN,
        instance_id: int | None = None,
        dag_id: int | None = None,
    ) -> Instance:
        """Create the instance of a node for a business date (default: yesterday, as DataWorks does)."""
        with self.lock:
            node = self.node(node_id)
            bizdate = business_date_ms(business_date)
            new_id = instance_id if instance_id is not None else self._next_instance_id()
            instance = Instance(
                id=new_id,
                node_id=node.id,
                workspace_id=node.workspace_id,
                dag_id=dag_id if dag_id is not None else next(self._dag_ids),
                bizdate=bizdate,
                cyc_time=cycle_time_ms(bizdate, node.cron),
                status=parse_status(status),
                owner=node.owner,
            )
            self.instances[instance.id] = instance
            return instance

    def _next_instance_id(self) -> int:
        while True:
            candidate = next(self._instance_ids)
            if candidate not in self.instances:
                return candidate

    def instance(self, instance_id: int) -> Instance:
        """Return an instance or raise ``Invalid.Instance.NotExists``."""
        with self.lock:
            found = self.instances.get(int(instance_id))
        if found is None:
            raise EmulatorError(
                f"The instance {instance_id} does not exist.", code="Invalid.Instance.NotExists"
            )
        return found

    def find_instance(self, node_id: int, bizdate: int) -> Instance | None:
        """Return the newest instance of a node for a business date, if any."""
        with self.lock:
            matches = [i for i in self.instances.values() if i.node_id == node_id and i.bizdate == bizdate]
        return max(matches, key=lambda i: i.id) if matches else None

    def set_status(self, instance_id: int, status: int | str) -> Instance:
        """Move an instance to a status, stamping the times DataWorks stamps, and return it."""
        code = parse_status(status)
        with self.lock:
            instance = self.instance(instance_id)
            stamp = now_ms()
            if code == NOT_RUN:
                instance.begin_wait_time_time = instance.begin_wait_res_time = None
                instance.begin_running_time = instance.finish_time = None
            if code == WAIT_TIME:
                instance.begin_wait_time_time = stamp
            if code == WAIT_RESOURCE:
                instance.begin_wait_time_time = instance.begin_wait_time_time or stamp
                instance.begin_wait_res_time = stamp
                instance.begin_running_time = instance.finish_time = None
            if code == RUNNING:
                instance.begin_wait_res_time = instance.begin_wait_res_time or stamp
                instance.begin_running_time = stamp
                instance.finish_time = None
            if code in TERMINAL_STATUSES:
                instance.finish_time = stamp
            instance.status = code
            instance.modify_time = stamp
            return instance

    def record_verdict(self, verdict: Verdict) -> Operation:
        """Store a verdict and release (``OK``, ``WARN``) or block (``FAIL``) the operation it answers.

        :raises EmulatorError: the message id is not an extension-point event this emulator published,
            or the check result is not OK / FAIL / WARN.
        """
        outcome = OPERATION_OUTCOMES.get(verdict.check_result.upper())
        if outcome is None:
            raise EmulatorError(
                f"CheckResult {verdict.check_result!r} is not valid; use OK, FAIL or WARN.",
                code="Invalid.Param.CheckResult",
            )
        with self.lock:
            operation = self.operations.get(verdict.message_id)
            if operation is None:
                raise EmulatorError(
                    f"The message {verdict.message_id!r} is not an extension-point event "
                    "waiting for a result.",
                    code="Invalid.Message.NotExists",
                )
            self.verdicts.append(verdict)
            if operation.status == "pending":
                operation.status = outcome
                operation.check_result = verdict.check_result.upper()
                operation.resolved_at = verdict.received_at
            return operation

    def expire_operation(self, message_id: str, check_result: str) -> Operation | None:
        """Resolve a pending operation as if ``check_result`` had arrived; return it if it was pending."""
        with self.lock:
            operation = self.operations.get(message_id)
            if operation is None or operation.status != "pending":
                return None
            operation.status = OPERATION_OUTCOMES[check_result]
            operation.check_result = check_result
            operation.resolved_at = now_ms()
            operation.timed_out = True
            return operation

    def take_fault(self, action: str) -> Fault | None:
        """Return the next planned fault for an action and count it as served."""
        with self.lock:
            for fault in self.faults:
                if fault.remaining > 0 and fault.action in ("*", action):
                    fault.remaining -= 1
                    fault.served += 1
                    return copy.copy(fault)
        return None

    def snapshot(self) -> dict[str, Any]:
        """Return the whole state as JSON-safe data."""
        with self.lock:
            return {
                "workspaces": to_json(list(self.workspaces.values())),
                "nodes": to_json(list(self.nodes.values())),
                "instances": to_json(list(self.instances.values())),
                "files": to_json(list(self.files.values())),
                "tables": to_json(list(self.tables.values())),
                "subscription": self.subscription.to_dict(),
                "verdicts": to_json(self.verdicts),
                "operations": to_json(list(self.operations.values())),
                "faults": to_json(self.faults),
            }


class Scheduler:
    """Runs timed callbacks on one background thread; a new plan for a key replaces the old one."""

    def __init__(self, *, name: str = "dataworks-emulator-scheduler") -> None:
        self._queue: list[tuple[float, int, str, int, Callable[[], None]]] = []
        self._generation: dict[str, int] = {}
        self._sequence = itertools.count()
        self._condition = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def plan(self, key: str, steps: Iterable[tuple[float, Callable[[], None]]]) -> None:
        """Run each ``(delay_seconds, callback)`` of a plan, dropping any earlier plan for ``key``."""
        start = time.monotonic()
        with self._condition:
            generation = self._generation.get(key, 0) + 1
            self._generation[key] = generation
            for delay, callback in steps:
                heapq.heappush(self._queue, (start + delay, next(self._sequence), key, generation, callback))
            self._condition.notify()

    def cancel(self, key: str) -> None:
        """Drop the pending steps of a plan."""
        with self._condition:
            self._generation[key] = self._generation.get(key, 0) + 1

    def pending(self, key: str) -> int:
        """Return how many steps of the current plan for ``key`` have not run yet."""
        with self._condition:
            generation = self._generation.get(key)
            return sum(1 for item in self._queue if item[2] == key and item[3] == generation)

    def stop(self) -> None:
        """Drop every plan and end the thread."""
        with self._condition:
            self._stopped = True
            self._queue.clear()
            self._condition.notify()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._condition:
                callback = self._next_due()
                if callback is None:
                    return
            try:
                callback()
            except Exception:
                log.exception("A scheduled step of the DataWorks emulator failed")

    def _next_due(self) -> Callable[[], None] | None:
        while not self._stopped:
            if not self._queue:
                self._condition.wait()
                continue
            due, _, key, generation, callback = self._queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                self._condition.wait(wait)
                continue
            heapq.heappop(self._queue)
            if self._generation.get(key) == generation:
                return callback
        return None
