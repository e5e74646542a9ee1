"""Unit tests of the DataWorks emulator's model, envelopes, subscription and faults (records go to a sink)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_dataworks.events import EVENT_TYPES, InstanceStatus, parse
from airflow_provider_dataworks.local.emulator import DataWorksEmulator
from airflow_provider_dataworks.local.emulator.model import (
    BUSINESS_TZ,
    FAILURE,
    NOT_RUN,
    RUNNING,
    SUCCESS,
    WAIT_RESOURCE,
    WAIT_TIME,
    EmulatorError,
    Fault,
    Model,
    Node,
    Verdict,
    Workspace,
    business_date_ms,
    parse_status,
)
from airflow_provider_dataworks.local.emulator.publisher import EVENT_KINDS

Record = tuple[str, "bytes | None", bytes]


class _Records:
    """A thread-safe sink that remembers every record."""

    def __init__(self) -> None:
        self._items: list[Record] = []
        self._lock = threading.Lock()

    def __call__(self, topic: str, key: bytes | None, value: bytes) -> None:
        with self._lock:
            self._items.append((topic, key, value))

    @property
    def items(self) -> list[Record]:
        with self._lock:
            return list(self._items)

    def documents(self) -> list[dict[str, Any]]:
        return [json.loads(value) for _, _, value in self.items]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.items) >= count:
                return self.documents()
            time.sleep(0.01)
        raise AssertionError(f"expected {count} records within {timeout}s, got {len(self.items)}")


@pytest.fixture
def records() -> _Records:
    return _Records()


@pytest.fixture
def make_emulator(records: _Records) -> Iterator[Callable[..., DataWorksEmulator]]:
    started: list[DataWorksEmulator] = []

    def make(envelope: str = "legacy") -> DataWorksEmulator:
        emulator = DataWorksEmulator(envelope=envelope, topic="unit-topic", sink=records).start()
        emulator.seed_demo()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


def _model_with_instance() -> tuple[Model, int]:
    model = Model()
    model.add_workspace(Workspace(id=1, identifier="ws", name="ws"))
    model.add_node(Node(id=11, workspace_id=1, name="n", cron="00 30 02 * * ?"))
    instance = model.add_instance(node_id=11, business_date="2024-06-01")
    return model, instance.id


def test_business_date_is_midnight_in_shanghai() -> None:
    assert business_date_ms("2024-06-01") == 1717171200000
    assert business_date_ms("2024-06-01 00:00:00") == 1717171200000
    assert business_date_ms(dt.date(2024, 6, 1)) == 1717171200000
    assert business_date_ms(1717171200000 + 3_600_000) == 1717171200000


def test_business_date_defaults_to_yesterday_in_shanghai() -> None:
    yesterday = dt.datetime.now(BUSINESS_TZ).date() - dt.timedelta(days=1)

    assert business_date_ms(None) == business_date_ms(yesterday)


def test_add_instance_derives_cycle_time_from_node_cron() -> None:
    model, instance_id = _model_with_instance()
    instance = model.instance(instance_id)

    assert instance.bizdate == 1717171200000
    assert instance.cyc_time == 1717171200000 + 86_400_000 + (2 * 3600 + 30 * 60) * 1000
    assert instance.status == NOT_RUN


def test_parse_status_accepts_codes_names_and_zero_as_not_run() -> None:
    assert parse_status(0) == NOT_RUN
    assert parse_status("6") == SUCCESS
    assert parse_status("running") == RUNNING
    assert parse_status("FAILURE(5)") == FAILURE
    with pytest.raises(EmulatorError):
        parse_status(42)


def test_set_status_stamps_the_times_of_each_stage() -> None:
    model, instance_id = _model_with_instance()

    model.set_status(instance_id, WAIT_TIME)
    model.set_status(instance_id, WAIT_RESOURCE)
    running = model.set_status(instance_id, RUNNING)
    assert running.begin_running_time is not None
    assert running.finish_time is None

    done = model.set_status(instance_id, SUCCESS)
    assert done.finish_time is not None
    assert (
        done.begin_wait_time_time <= done.begin_wait_res_time <= done.begin_running_time <= done.finish_time
    )

    rerun = model.set_status(instance_id, WAIT_RESOURCE)
    assert rerun.begin_running_time is None
    assert rerun.finish_time is None


def test_legacy_envelope_carries_instance_payload_keyed_by_instance(
    make_emulator: Callable[..., DataWorksEmulator], records: _Records
) -> None:
    emulator = make_emulator("legacy")
    instance = emulator.add_instance(node_id=700000001)

    emulator.set_instance_status(instance["id"], "RUNNING")

    topic, key, value = records.items[-1]
    document = json.loads(value)
    assert topic == "unit-topic"
    assert key == str(instance["id"]).encode()
    assert set(document) == {"messageId", "eventType", "eventCategoryType", "blockBusiness", "messageBody"}
    assert document["eventType"] == "instance-status-changes"
    assert document["eventCategoryType"] == "instance-status-change"
    assert document["blockBusiness"] is False
    body = document["messageBody"]
    assert body["taskId"] == instance["id"]
    assert body["appId"] == 10001
    assert body["nodeId"] == 700000001
    assert body["dagId"] == instance["dag_id"]
    assert body["status"] == 4
    assert isinstance(body["beginRunningTime"], int)
    assert "finishTime" not in body

    event = parse(value)
    assert event.status is InstanceStatus.RUNNING
    assert event.instance_ids == (instance["id"],)


def test_cloudevents_envelope_has_eventbridge_attributes(
    make_emulator: Callable[..., DataWorksEmulator], records: _Records
) -> None:
    emulator = make_emulator("cloudevents")
    instance = emulator.add_instance(node_id=700000001)

    emulator.set_instance_status(instance["id"], SUCCESS)

    document = records.documents()[-1]
    assert document["source"] == "acs.dataworks"
    assert document["specversion"] == "1.0"
    assert document["type"] == "dataworks:InstanceStatusChanges:InstanceStatusChanges"
    assert document["subject"] == ""
    assert document["datacontenttype"] == "application/json;charset=utf-8"
    assert dt.datetime.fromisoformat(document["time"]).utcoffset() == dt.timedelta(hours=8)
    assert {"aliyunaccountid", "aliyunpublishtime", "aliyuneventbusname", "aliyunregionid"} <= set(document)
    assert document["data"]["eventCode"] == "instance-status-changes"
    assert document["data"]["status"] == 6
    assert isinstance(document["data"]["finishTime"], int)
    assert parse(json.dumps(document)).status is InstanceStatus.SUCCESS


def test_play_instance_publishes_each_status_in_order(
    make_emulator: Callable[..., DataWorksEmulator], records: _Records
) -> None:
    emulator = make_emulator()
    instance = emulator.add_instance(node_id=700000001)

    emulator.play_instance(instance["id"], delay=0.0, step=0.01)

    documents = records.wait_for(4)
    assert [d["messageBody"]["status"] for d in documents] == [2, 3, 4, 6]
    assert emulator.instance(instance["id"])["status"] == SUCCESS


def test_rerun_of_unfinished_instance_is_refused(make_emulator: Callable[..., DataWorksEmulator]) -> None:
    emulator = make_emulator()
    instance = emulator.add_instance(node_id=700000001, status=RUNNING)

    with pytest.raises(EmulatorError, match="only a finished instance"):
        emulator.rerun_instance(instance["id"])


def test_rerun_publishes_rerun_event_then_statuses_to_outcome(
    make_emulator: Callable[..., DataWorksEmulator], records: _Records
) -> None:
    emulator = make_emulator()
    instance = emulator.add_instance(node_id=700000001, status=SUCCESS)

    emulator.rerun_instance(instance["id"], outcome="FAILURE", step=0.01)

    documents = records.wait_for(4)
    assert documents[0]["eventType"] == "rerun-instance"
    assert documents[0]["messageBody"]["taskIds"] == [instance["id"]]
    assert [d["messageBody"]["status"] for d in documents[1:]] == [3, 4, 5]


def test_new_plan_replaces_the_pending_one(
    make_emulator: Callable[..., DataWorksEmulator], records: _Records
) -> None:
    emulator = make_emulator()
    instance = emulator.add_instance(node_id=700000001)
    emulator.play_instance(instance["id"], delay=60)
    assert emulator.instance_plan_pending(instance["id"]) == 4

    emulator.play_instance(instance["id"], statuses=["FAILURE"], delay=0)

    assert [d["messageBody"]["status"] for d in records.wait_for(1)] == [5]
    assert emulator.instance_plan_pending(instance["id"]) == 0


def test_stop_drops_planned_status_changes_promptly(records: _Records) -> None:
    emulator = DataWorksEmulator(sink=records).start()
    emulator.seed_demo()
    instance = emulator.add_instance(node_id=700000001)
    emulator.play_instance(instance["id"], delay=30)

    started = time.monotonic()
    emulator.stop()

    assert time.monotonic() - started < 5
    assert records.items == []
    assert not [t for t in threading.enumerate() if t.name.startswith("dataworks-emulator")]


def test_play_demo_runs_todays_instance_of_the_demo_node_to_success(
    make_emulator: Callable[..., DataWorksEmulator], records: _Records
) -> None:
    emulator = make_emulator()

    instance = emulator.play_demo(delay=0, step=0.01)

    assert instance["node_id"] == 700000001
    assert instance["workspace_id"] == 10001
    assert instance["bizdate"] == business_date_ms(None)
    assert [d["messageBody"]["status"] for d in records.wait_for(4)] == [2, 3, 4, 6]


def test_subscription_publishes_only_covered_workspaces_and_event_types(
    make_emulator: Callable[..., DataWorksEmulator], records: _Records
) -> None:
    emulator = make_emulator()
    emulator.add_workspace(workspace_id=20002, identifier="other_ws")
    emulator.add_node(node_id=800, workspace_id=20002, name="other_node")
    emulator.set_subscription(workspaces=[10001], event_types=["instance-status-changes"])

    emulator.publish_instance(node_id=800, status="RUNNING")
    emulator.publish_node_event(node_id=700000001)
    emulator.publish_instance(node_id=700000001, status="RUNNING")

    documents = records.documents()
    assert [(d["eventType"], d["messageBody"]["appId"]) for d in documents] == [
        ("instance-status-changes", 10001)
    ]


def test_subscription_switched_off_publishes_nothing_but_raw_records(
    make_emulator: Callable[..., DataWorksEmulator], records: _Records
) -> None:
    emulator = make_emulator()
    emulator.set_subscription(enabled=False)

    assert emulator.publish_instance(node_id=700000001, status="SUCCESS")["status"] == SUCCESS
    emulator.publish_raw(b"\xffnot json", key="k")

    assert records.items == [("unit-topic", b"k", b"\xffnot json")]


def test_subscription_limits_workspaces_and_consumer_groups(
    make_emulator: Callable[..., DataWorksEmulator],
) -> None:
    emulator = make_emulator()

    with pytest.raises(EmulatorError, match="at most 5 workspaces"):
        emulator.set_subscription(workspaces=range(6))
    with pytest.raises(EmulatorError, match="at most 5 extra consumer groups"):
        emulator.set_subscription(consumer_groups=[f"g{i}" for i in range(6)])

    result = emulator.set_subscription(consumer_groups=["a", "b", "a"])
    assert result == {"enabled": True, "workspaces": None, "event_types": None, "consumer_groups": ["a", "b"]}


def test_fault_serves_count_calls_of_its_action_only() -> None:
    model = Model()
    model.faults.append(Fault(action="GetInstance", kind="throttle", remaining=2))

    assert model.take_fault("GetNode") is None
    assert model.take_fault("GetInstance").kind == "throttle"
    assert model.take_fault("GetInstance").kind == "throttle"
    assert model.take_fault("GetInstance") is None
    assert (model.faults[0].remaining, model.faults[0].served) == (0, 2)


def test_fault_for_any_action_matches_every_action() -> None:
    model = Model()
    model.faults.append(Fault(action="*", kind="error"))

    assert model.take_fault("ListInstances").kind == "error"
    assert model.take_fault("GetNode") is None


def test_fault_rejects_unknown_kind() -> None:
    with pytest.raises(EmulatorError, match="Unknown fault kind"):
        Fault(action="*", kind="explode")


def test_extension_event_holds_operation_until_verdict(
    make_emulator: Callable[..., DataWorksEmulator], records: _Records
) -> None:
    emulator = make_emulator()

    message_id = emulator.publish_file_event(file_id=500000001, event_type="commit-file", extension=True)

    document = records.documents()[-1]
    assert document["messageId"] == message_id
    assert document["blockBusiness"] is True
    assert document["messageBody"]["blockBusiness"] is True
    assert document["messageBody"]["extensionBizId"].startswith("ext-biz-")
    assert [op["status"] for op in emulator.operations()] == ["pending"]

    emulator.model.record_verdict(
        Verdict(message_id=message_id, extension_code="ext", check_result="FAIL", tip="no", action="test")
    )

    assert [op["status"] for op in emulator.operations()] == ["blocked"]
    assert emulator.verdicts()[0]["check_result"] == "FAIL"


def test_regular_file_event_holds_nothing(
    make_emulator: Callable[..., DataWorksEmulator], records: _Records
) -> None:
    emulator = make_emulator()

    emulator.publish_file_event(file_id=500000001, event_type="deploy-file")

    assert records.documents()[-1]["blockBusiness"] is False
    assert emulator.operations() == []


def test_verdict_for_unknown_message_is_refused() -> None:
    model = Model()

    with pytest.raises(EmulatorError) as caught:
        model.record_verdict(
            Verdict(message_id="m", extension_code="e", check_result="OK", tip="", action="t")
        )

    assert caught.value.code == "Invalid.Message.NotExists"
    assert model.verdicts == []


def test_table_event_is_an_extension_point_with_maxcompute_project(
    make_emulator: Callable[..., DataWorksEmulator], records: _Records
) -> None:
    emulator = make_emulator("cloudevents")

    emulator.publish_table_event(workspace_id=10001, table_name="dwd_orders_di", event_type="deploy-table")

    document = records.documents()[-1]
    assert document["type"] == "dataworks:TableChange:DeployTable"
    assert document["data"]["maxComputeProject"] == "mc_demo_prod"
    assert document["data"]["tableType"] == "ODPS"
    assert [op["event_type"] for op in emulator.operations()] == ["deploy-table"]


def test_emulator_event_table_agrees_with_the_provider_catalogue() -> None:
    for code, kind in EVENT_KINDS.items():
        assert code in EVENT_TYPES, code
        assert EVENT_TYPES[code].eventbridge_type == kind.eventbridge_type


def test_state_lists_everything_json_safe(make_emulator: Callable[..., DataWorksEmulator]) -> None:
    emulator = make_emulator()
    emulator.add_instance(node_id=700000002)
    emulator.inject_fault("GetNode", "hang", seconds=1)

    state = json.loads(json.dumps(emulator.state()))

    assert [w["id"] for w in state["workspaces"]] == [10001]
    assert sorted(n["id"] for n in state["nodes"]) == [700000001, 700000002]
    assert state["instances"][0]["status_name"] == "NOT_RUN"
    assert {t["guid"] for t in state["tables"]} == {
        "odps.mc_demo_prod.ods_orders_di",
        "odps.mc_demo_prod.dwd_orders_di",
    }
    assert state["faults"][0]["kind"] == "hang"
    assert state["subscription"]["enabled"] is True


def test_add_instance_with_publish_sends_its_initial_status(
    make_emulator: Callable[..., DataWorksEmulator], records: _Records
) -> None:
    emulator = make_emulator()

    instance = emulator.add_instance(node_id=700000002, publish=True)

    body = records.documents()[-1]["messageBody"]
    assert (body["taskId"], body["status"]) == (instance["id"], NOT_RUN)
    assert "beginWaitTimeTime" not in body


def test_extension_timeout_resolves_operations_without_verdict(
    make_emulator: Callable[..., DataWorksEmulator],
) -> None:
    emulator = make_emulator()
    emulator.set_extension_timeout(0.05, outcome="FAIL")

    message_id = emulator.publish_table_event(workspace_id=10001, table_name="ods_orders_di")

    deadline = time.monotonic() + 10
    while emulator.operations()[0]["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.01)
    (operation,) = emulator.operations()
    assert (operation["message_id"], operation["status"], operation["timed_out"]) == (
        message_id,
        "blocked",
        True,
    )
    assert emulator.verdicts() == []
