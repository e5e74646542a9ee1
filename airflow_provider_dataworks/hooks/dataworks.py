"""DataWorksHook: one ``dataworks`` connection turned into Kafka clients and a DataWorks OpenAPI client."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseHook
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential_jitter,
)

from airflow_provider_dataworks.exceptions import (
    DataWorksConnectionConfigError,
    DataWorksKafkaError,
    DataWorksKafkaUnreachableError,
    DataWorksOpenAPIError,
)
from airflow_provider_dataworks.hooks.settings import DataWorksConnectionSettings

if TYPE_CHECKING:
    from alibabacloud_dataworks_public20200518.client import Client as OpenAPIClient
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

T = TypeVar("T")

_kafka_log = logging.getLogger("airflow_provider_dataworks.kafka")


class _RepeatFilter(logging.Filter):
    """
    Let one librdkafka line of each kind through per window, and count the ones held back.

    While brokers are down librdkafka reports every reconnect attempt, many a second; the first
    line says what happened, the rest would only bury the task log. Connection failures (facility
    ``FAIL``) come as warnings: librdkafka retries them itself, and the reader decides what is fatal.
    """

    _VARIABLE = re.compile(r"\(after \d+ms in state \w+[^)]*\)|#(?:consumer|producer|admin)-\d+|\d+")

    def __init__(self, window: float = 60.0) -> None:
        super().__init__()
        self.window = window
        self._seen: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = self._VARIABLE.sub("", record.getMessage())
        now = time.monotonic()
        with self._lock:
            first, held = self._seen.get(key, (None, 0))
            if first is not None and now - first < self.window:
                self._seen[key] = (first, held + 1)
                return False
            if len(self._seen) > 1_000:
                self._seen.clear()
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.getMessage()} (and {held} more like it in the last {self.window:.0f} s)"
            record.args = ()
        if record.levelno > logging.WARNING and record.getMessage().startswith("FAIL "):
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


_kafka_log.addFilter(_RepeatFilter())

_OPENAPI_WAIT = wait_exponential_jitter(multiplier=0.5, max=20)


class DataWorksHook(BaseHook):
    """
    Interact with DataWorks events on Kafka and with the DataWorks OpenAPI.

    The connection is read lazily, on first use, never in the constructor (operators build hooks at
    DAG parse time). Kafka settings reach librdkafka through an allowlist; secrets stay inside the
    clients and never appear in logs or errors.

    :param dataworks_conn_id: the ``dataworks`` connection to use.
    :param kafka_overrides: librdkafka settings applied last, for DAG authors who need a setting the
        connection may not carry (the connection's ``kafka_config`` is allowlisted).
    """

    conn_name_attr = "dataworks_conn_id"
    default_conn_name = "dataworks_default"
    conn_type = "dataworks"
    hook_name = "Alibaba Cloud DataWorks"

    def __init__(
        self,
        dataworks_conn_id: str = default_conn_name,
        *,
        kafka_overrides: dict[str, Any] | None = None,
        settings: DataWorksConnectionSettings | None = None,
    ) -> None:
        super().__init__()
        self.dataworks_conn_id = dataworks_conn_id
        self.kafka_overrides = dict(kafka_overrides or {})
        self._settings = settings
        self._openapi_client: OpenAPIClient | None = None
        self._openapi_cancelled = threading.Event()

    @property
    def settings(self) -> DataWorksConnectionSettings:
        """The connection's settings, read and checked once."""
        if self._settings is None:
            conn = self.get_connection(self.dataworks_conn_id)
            self._settings = DataWorksConnectionSettings.from_connection(conn)
        return self._settings

    @classmethod
    async def aget_settings(cls, dataworks_conn_id: str) -> DataWorksConnectionSettings:
        """Read a connection's settings without blocking the event loop (for triggers)."""
        from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

        conn = await get_async_connection(dataworks_conn_id)
        extra = await get_async_extra_dejson(conn)
        return DataWorksConnectionSettings.from_connection(conn, extra=extra)

    def get_conn(self) -> OpenAPIClient:
        """Return the DataWorks OpenAPI client (see :meth:`get_openapi_client`)."""
        return self.get_openapi_client()

    # Kafka

    def kafka_config(self) -> dict[str, Any]:
        """Return the librdkafka settings shared by consumers, producers and admin clients."""
        settings = self.settings
        settings.require_kafka(self.dataworks_conn_id)
        protocol = settings.effective_security_protocol

        config: dict[str, Any] = {
            "bootstrap.servers": settings.bootstrap_servers,
            "security.protocol": protocol,
            "error_cb": _log_kafka_error,
            "logger": _kafka_log,
        }
        if protocol.startswith("SASL"):
            if not settings.sasl_username or settings.sasl_password is None:
                raise DataWorksConnectionConfigError(
                    f"Connection {self.dataworks_conn_id!r} uses {protocol} but has no SASL user or "
                    "password: set the SASL username and SASL password to the Kafka user DataWorks created "
                    "for the subscription"
                )
            config["sasl.mechanism"] = settings.sasl_mechanism
            config["sasl.username"] = settings.sasl_username
            config["sasl.password"] = settings.sasl_password.get_secret_value()
        if protocol.endswith("SSL"):
            if settings.ssl_ca and settings.ssl_ca.startswith("-----BEGIN"):
                config["ssl.ca.pem"] = settings.ssl_ca
            elif settings.ssl_ca:
                config["ssl.ca.location"] = settings.ssl_ca
            config["ssl.endpoint.identification.algorithm"] = (
                "https" if settings.ssl_verify_hostname else "none"
            )
        config.update(settings.kafka_config)
        config.update(self.kafka_overrides)
        return config

    def consumer_config(self, *, group_id: str | None = None, **overrides: Any) -> dict[str, Any]:
        """
        Return a consumer configuration that never commits offsets by itself.

        :param group_id: the consumer group; defaults to the connection's, then to ``airflow-dataworks``.
        :param overrides: further librdkafka settings, applied last.
        """
        config = self.kafka_config()
        config.update(
            {
                "group.id": group_id or self.settings.consumer_group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "allow.auto.create.topics": False,
            }
        )
        config.update(overrides)
        return config

    def get_consumer(self, *, group_id: str | None = None, **overrides: Any) -> Consumer:
        """Return a new confluent-kafka consumer; the caller closes it."""
        from confluent_kafka import Consumer

        return Consumer(self.consumer_config(group_id=group_id, **overrides))

    def get_producer(self, **overrides: Any) -> Producer:
        """Return a new confluent-kafka producer; the caller flushes it."""
        from confluent_kafka import Producer

        return Producer({**self.kafka_config(), **overrides})

    def get_admin_client(self, **overrides: Any) -> AdminClient:
        """Return a new confluent-kafka admin client."""
        from confluent_kafka.admin import AdminClient

        return AdminClient({**self.kafka_config(), **overrides})

    def check_topic(self, topic: str | None, *, timeout: float = 15.0) -> int:
        """
        Check that the brokers can be reached with these credentials and that ``topic`` exists.

        :param topic: the topic; ``None`` checks the brokers and credentials only.
        :return: the topic's number of partitions (0 without a topic).
        :raises DataWorksKafkaError: naming the cause (credentials, TLS, unknown topic) and its fix.
        """
        from confluent_kafka import KafkaException

        client_errors: list[Any] = []

        def collect(error: Any) -> None:
            client_errors.append(error)
            _log_kafka_error(error)

        # A metadata request for one topic would create it on brokers that allow auto-creation.
        admin = self.get_admin_client(
            **{
                "socket.timeout.ms": int(timeout * 1000),
                "error_cb": collect,
                "allow.auto.create.topics": False,
            }
        )
        try:
            metadata = admin.list_topics(topic=topic, timeout=timeout)
        except KafkaException as error:
            # librdkafka reports a refused SASL login or a failed TLS handshake only through the error
            # callback, which runs inside poll(); list_topics itself just times out.
            admin.poll(0)
            raise kafka_error_with_fix(
                _root_cause(client_errors) or error.args[0], self.settings, self.dataworks_conn_id
            ) from None

        if topic is None:
            return 0
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise DataWorksKafkaError(
                f"Kafka topic {topic!r} does not exist on {self.settings.bootstrap_servers} (connection "
                f"{self.dataworks_conn_id!r}); check the topic field of the connection or the task against "
                "the topic shown in the DataWorks OpenEvent console"
            )
        return len(described.partitions)

    # DataWorks OpenAPI

    def get_openapi_client(self) -> OpenAPIClient:
        """Return the DataWorks OpenAPI (2020-05-18) client for the connection's region or endpoint."""
        if self._openapi_client is None:
            from alibabacloud_dataworks_public20200518.client import Client
            from alibabacloud_tea_openapi.utils_models import Config

            settings = self.settings
            settings.require_openapi(self.dataworks_conn_id)
            timeout_ms = int(settings.openapi_timeout_seconds * 1000)
            assert settings.access_key_secret is not None
            self._openapi_client = Client(
                Config(
                    access_key_id=settings.access_key_id,
                    access_key_secret=settings.access_key_secret.get_secret_value(),
                    security_token=(
                        settings.security_token.get_secret_value() if settings.security_token else None
                    ),
                    region_id=settings.region_id,
                    endpoint=settings.endpoint,
                    protocol=settings.protocol,
                    connect_timeout=timeout_ms,
                    read_timeout=timeout_ms,
                )
            )
        return self._openapi_client

    def call_openapi(
        self, api: str, call: Callable[[], T], *, max_attempts: int = 6, max_seconds: float = 120
    ) -> T:
        """
        Call the OpenAPI with retries on throttling, 5xx answers and timeouts.

        Throttled calls wait as long as DataWorks asks (``x-acs-retry-after``); other retryable
        failures back off exponentially with jitter. Each attempt waits at most the connection's
        ``openapi_timeout_seconds`` for an answer. After :meth:`cancel_openapi_calls` no attempt starts.

        :param api: the operation name, used in errors (``GetInstance``).
        :param call: a no-argument function doing the SDK call.
        :return: the SDK response.
        :raises DataWorksOpenAPIError: when DataWorks refuses the call, answers ``Success: false``, or
            retries are used up.
        """
        retrying = Retrying(
            retry=retry_if_exception(_is_retryable),
            wait=_wait_for_retry,
            stop=(
                stop_after_attempt(max_attempts)
                | stop_after_delay(max_seconds)
                | stop_when_event_set(self._openapi_cancelled)
            ),
            sleep=self._sleep_unless_cancelled,
            before_sleep=lambda state: self.log.warning(
                "DataWorks %s failed (%s, attempt %d of %d); retrying in %.1f s",
                api,
                _describe(state.outcome.exception() if state.outcome else None),
                state.attempt_number,
                max_attempts,
                state.next_action.sleep if state.next_action else 0,
            ),
            reraise=True,
        )
        try:
            response = retrying(call)
        except Exception as error:
            raise openapi_error_with_fix(api, error, self.settings, self.dataworks_conn_id) from None

        check_openapi_success(api, response)
        return response

    def _sleep_unless_cancelled(self, seconds: float) -> None:
        self._openapi_cancelled.wait(seconds)

    def cancel_openapi_calls(self) -> None:
        """
        Stop the retries of this hook's OpenAPI calls, for a trigger that stops waiting.

        Calls run on pool threads that a cancelled trigger does not wait for; without this they would
        go on retrying for minutes. An attempt already sent still ends at its timeout.
        """
        self._openapi_cancelled.set()

    def test_connection(self) -> tuple[bool, str]:
        """
        Check both halves of the connection within bounded time.

        :return: whether everything works, and a message per half naming what failed and the fix.
        """
        messages = []
        ok = True
        try:
            settings = self.settings
        except DataWorksConnectionConfigError as error:
            return False, str(error)

        if settings.bootstrap_servers:
            try:
                partitions = self.check_topic(settings.topic, timeout=10)
                if settings.topic:
                    messages.append(f"Kafka: topic {settings.topic!r} reachable ({partitions} partitions).")
                else:
                    messages.append("Kafka: brokers reachable (no topic set).")
            except Exception as error:
                ok = False
                messages.append(f"Kafka: {error}")
        if settings.access_key_id:
            try:
                self._check_openapi()
                messages.append("DataWorks OpenAPI: credentials accepted.")
            except Exception as error:
                ok = False
                messages.append(f"DataWorks OpenAPI: {error}")
        if not messages:
            return False, "Neither Kafka bootstrap servers nor a DataWorks AccessKey is set."
        return ok, "\n".join(messages)

    def _check_openapi(self) -> None:
        from alibabacloud_dataworks_public20200518 import models

        client = self.get_openapi_client()
        self.call_openapi(
            "ListProjects",
            lambda: client.list_projects(models.ListProjectsRequest(page_number=1, page_size=1)),
            max_attempts=2,
            max_seconds=20,
        )


def _root_cause(errors: list[Any]) -> Any | None:
    from confluent_kafka import KafkaError

    for error in errors:
        if error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL):
            return error
    return None


def _log_kafka_error(error: Any) -> None:
    _kafka_log.warning("Kafka client reported %s", error)


def kafka_error_with_fix(
    error: Any, settings: DataWorksConnectionSettings, conn_id: str
) -> DataWorksKafkaError:
    """Turn a librdkafka error into one that names the cause and the fix (and no secret)."""
    from confluent_kafka import KafkaError

    code = error.code() if hasattr(error, "code") else None
    text = error.str() if hasattr(error, "str") else str(error)
    servers = settings.bootstrap_servers
    if code == KafkaError._AUTHENTICATION or ("SASL" in text and "auth" in text.lower()):
        if "SSL" in text or "certificate" in text.lower():
            return DataWorksKafkaError(
                f"TLS handshake with {servers} failed ({text}); check that the connection's CA certificate "
                f"(ssl_ca of {conn_id!r}) is the one that signed the brokers' certificates, and turn "
                "hostname verification off for ApsaraMQ for Kafka"
            )
        return DataWorksKafkaError(
            f"Kafka at {servers} refused the SASL user {settings.sasl_username!r} of connection "
            f"{conn_id!r} ({text}); check the SASL username and SASL password against the Kafka user in "
            "the DataWorks OpenEvent console"
        )
    if code == KafkaError._SSL or "SSL" in text or "certificate" in text.lower():
        return DataWorksKafkaError(
            f"TLS handshake with {servers} failed ({text}); check that the connection's CA certificate "
            f"(ssl_ca of {conn_id!r}) signed the brokers' certificates"
        )
    if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED):
        what = "topic" if code == KafkaError.TOPIC_AUTHORIZATION_FAILED else "consumer group"
        return DataWorksKafkaError(
            f"Kafka at {servers} does not let the SASL user {settings.sasl_username!r} of connection "
            f"{conn_id!r} read this {what} ({text}); grant the user read access to the topic and its group "
            "in the ApsaraMQ for Kafka console, or use the group DataWorks created for the subscription"
        )
    if code in (
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._RESOLVE,
    ):
        return DataWorksKafkaUnreachableError(
            f"Cannot reach Kafka at {servers} ({text}); check the Host field of connection {conn_id!r}, "
            "the security protocol (ApsaraMQ: SASL_SSL on port 9093) and the network path from Airflow"
        )
    return DataWorksKafkaError(f"Kafka at {servers} failed: {text}")


def _is_retryable(error: BaseException) -> bool:
    from alibabacloud_tea_openapi.exceptions import ServerException, ThrottlingException

    if isinstance(error, ThrottlingException | ServerException):
        return True
    try:
        from darabonba.exceptions import UnretryableException
    except ImportError:
        return False
    if isinstance(error, UnretryableException):
        text = str(error).lower()
        return "timed out" in text or "timeout" in text or "connection" in text
    return False


def _wait_for_retry(state: RetryCallState) -> float:
    from alibabacloud_tea_openapi.exceptions import ThrottlingException

    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, ThrottlingException) and error.retry_after:
        return min(float(error.retry_after) / 1000, 60.0)
    return _OPENAPI_WAIT(state)


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no answer"
    if _is_timeout(error):
        return "no answer in time"
    code = getattr(error, "code", None)
    return f"{type(error).__name__} {code}" if code else type(error).__name__


def _is_timeout(error: BaseException) -> bool:
    return getattr(error, "status_code", None) is None and any(
        word in str(error).lower() for word in ("timed out", "timeout")
    )


def openapi_error_with_fix(
    api: str, error: Exception, settings: DataWorksConnectionSettings, conn_id: str
) -> DataWorksOpenAPIError:
    """Turn an SDK exception into one that names the API, DataWorks' code, the request id and the fix."""
    code = getattr(error, "code", None)
    request_id = getattr(error, "request_id", None)
    status = getattr(error, "status_code", None)
    detail = getattr(error, "message", None) or str(error)
    where = settings.endpoint or f"region {settings.region_id}"

    if code in (
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId",
        "InvalidCredentials",
    ):
        fix = (
            f"DataWorks ({where}) rejected the AccessKey {settings.access_key_id!r} of connection "
            f"{conn_id!r}; check access_key_id and access_key_secret in the RAM console"
        )
    elif code and str(code).startswith("Forbidden"):
        fix = (
            f"the AccessKey {settings.access_key_id!r} of connection {conn_id!r} may not do this; grant "
            "the RAM user access to the workspace (workspace members) or AliyunDataWorksFullAccess"
        )
    elif _is_timeout(error):
        fix = (
            f"DataWorks OpenAPI at {where} did not answer within {settings.openapi_timeout_seconds:g} s "
            f"(openapi_timeout_seconds of connection {conn_id!r}), retries included; check the region or "
            "endpoint of the connection, or raise that timeout"
        )
    elif status is None and "connect" in str(error).lower():
        fix = (
            f"Cannot connect to DataWorks OpenAPI at {where}; check the region or endpoint of connection "
            f"{conn_id!r}"
        )
    else:
        fix = f"DataWorks OpenAPI at {where} failed"
    message = (
        f"{api}: {fix} (code {code or 'none'}, HTTP {status or 'none'}, request id {request_id or 'none'}): "
    )
    return DataWorksOpenAPIError(
        message + _scrub(detail, settings), api=api, code=code, request_id=request_id
    )


def check_openapi_success(api: str, response: Any) -> None:
    """Raise when DataWorks answered HTTP 200 with ``Success: false`` (the SDK raises nothing then)."""
    body = getattr(response, "body", None)
    success = getattr(body, "success", None)
    if success is None or success is True or str(success).lower() == "true":
        return
    code = getattr(body, "error_code", None)
    request_id = getattr(body, "request_id", None)
    message = getattr(body, "error_message", None) or "no message"
    raise DataWorksOpenAPIError(
        f"{api} answered Success=false (code {code or 'none'}, request id {request_id or 'none'}): {message}",
        api=api,
        code=code,
        request_id=request_id,
    )


def _scrub(text: str, settings: DataWorksConnectionSettings) -> str:
    for secret in (settings.access_key_secret, settings.security_token, settings.sasl_password):
        if secret is not None and secret.get_secret_value():
            text = text.replace(secret.get_secret_value(), "***")
    return text
