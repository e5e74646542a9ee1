"""The ``dataworks`` connection, validated: Kafka and DataWorks OpenAPI settings in one model."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from airflow_provider_dataworks.exceptions import DataWorksConnectionConfigError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

# librdkafka settings a connection may set through ``kafka_config``: tuning only. Anything that
# loads code or files, installs callbacks or switches TLS checks off stays out of reach of people
# who can edit connections, and is set by DAG authors through hook arguments instead.
KAFKA_CONFIG_ALLOWLIST = frozenset(
    {
        "api.version.request",
        "broker.address.family",
        "broker.version.fallback",
        "client.id",
        "client.rack",
        "connections.max.idle.ms",
        "fetch.error.backoff.ms",
        "fetch.max.bytes",
        "fetch.min.bytes",
        "fetch.queue.backoff.ms",
        "fetch.wait.max.ms",
        "heartbeat.interval.ms",
        "isolation.level",
        "max.partition.fetch.bytes",
        "max.poll.interval.ms",
        "message.max.bytes",
        "metadata.max.age.ms",
        "queued.max.messages.kbytes",
        "queued.min.messages",
        "receive.message.max.bytes",
        "reconnect.backoff.max.ms",
        "reconnect.backoff.ms",
        "retry.backoff.max.ms",
        "retry.backoff.ms",
        "sasl.kerberos.min.time.before.relogin",
        "session.timeout.ms",
        "socket.connection.setup.timeout.ms",
        "socket.keepalive.enable",
        "socket.timeout.ms",
        "ssl.cipher.suites",
        "ssl.curves.list",
        "topic.metadata.refresh.interval.ms",
    }
)
_FORBIDDEN_HINTS = {
    "plugin.library.paths": "it loads shared libraries into the Airflow process",
    "ssl.engine.location": "it loads an OpenSSL engine into the Airflow process",
    "ssl.providers": "it loads OpenSSL providers into the Airflow process",
    "enable.ssl.certificate.verification": "it switches TLS certificate checks off",
    "ssl.endpoint.identification.algorithm": "it can switch hostname checks off (use ssl_verify_hostname)",
    "sasl.kerberos.kinit.cmd": "it runs a command on the Airflow host",
    "sasl.oauthbearer.token.endpoint.url": "it sends credentials to a URL of its own",
    "on_commit": "it names a callback",
    "on_delivery": "it names a callback",
    "logger": "it names a callback",
}


def _refusal_reason(key: str) -> str | None:
    """Return why a librdkafka setting may not come from a connection, or ``None`` if nothing is known."""
    name = key.strip().lower()
    if name in _FORBIDDEN_HINTS:
        return _FORBIDDEN_HINTS[name]
    if name.endswith(("_cb", ".cb")) or name.startswith("on_"):
        return "it names a callback"
    if "library" in name or "plugin" in name or "engine" in name:
        return "it loads code into the Airflow process"
    if name.endswith((".location", ".directory", ".keytab", ".file", ".path", ".paths")):
        return "it reads files from the Airflow host"
    return None


_PEM_MARKER = "-----BEGIN"

DEFAULT_CONSUMER_GROUP = "airflow-dataworks"
"""The consumer group of a connection that names none."""


class DataWorksConnectionSettings(BaseModel):
    """
    Everything a ``dataworks`` connection holds, checked.

    Kafka: ``host`` holds the bootstrap servers, ``login``/``password`` the SASL user and password,
    the rest lives in the connection's extra under the field names below. DataWorks OpenAPI: the
    AccessKey pair (and an optional STS token), a region or an explicit endpoint.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    bootstrap_servers: str | None = None
    security_protocol: SecurityProtocol | None = None
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca: str | None = None
    ssl_verify_hostname: bool = True
    topic: str | None = None
    consumer_group: str = DEFAULT_CONSUMER_GROUP
    kafka_config: dict[str, str | int | float | bool] = Field(default_factory=dict)

    access_key_id: str | None = None
    access_key_secret: SecretStr | None = None
    security_token: SecretStr | None = None
    region_id: str = "cn-hangzhou"
    endpoint: str | None = None
    protocol: Literal["https", "http"] = "https"
    project_env: Literal["PROD", "DEV"] = "PROD"
    extension_code: str | None = None
    openapi_timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    @field_validator("consumer_group", mode="before")
    @classmethod
    def _default_group(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) and value.strip() else DEFAULT_CONSUMER_GROUP

    @field_validator("bootstrap_servers", "topic", "ssl_ca", "endpoint", "access_key_id")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() if value and value.strip() else None

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str) or not value.strip():
            return "PLAIN" if info.field_name == "sasl_mechanism" else None
        text = value.strip().upper()
        return text.replace("_", "-") if info.field_name == "sasl_mechanism" else text

    @field_validator("protocol", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) and value.strip() else "https"

    @field_validator("kafka_config", mode="before")
    @classmethod
    def _allowlisted(cls, value: Any) -> dict[str, Any]:
        if value in (None, ""):
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError("kafka_config must be a JSON object of librdkafka settings") from None
        if not isinstance(value, Mapping):
            raise ValueError("kafka_config must be a JSON object of librdkafka settings")
        for key in value:
            reason = _refusal_reason(str(key))
            if reason is not None:
                raise ValueError(
                    f"kafka_config key {key!r} is refused because {reason}; "
                    "set it from DAG code through DataWorksHook(kafka_overrides=...) if you really need it"
                )
            if key not in KAFKA_CONFIG_ALLOWLIST:
                raise ValueError(
                    f"kafka_config key {key!r} is not allowed in a connection; "
                    f"allowed keys: {', '.join(sorted(KAFKA_CONFIG_ALLOWLIST))}"
                )
        return dict(value)

    @model_validator(mode="before")
    @classmethod
    def _client_settings_only_in_kafka_config(cls, data: Any) -> Any:
        # Extras that are not fields are dropped; a librdkafka key or callback among them is refused
        # instead, so that nobody believes it took effect (and nobody gets it through by accident).
        if not isinstance(data, Mapping):
            return data
        for key in data:
            if key in cls.model_fields:
                continue
            reason = _refusal_reason(str(key))
            if reason is not None:
                raise ValueError(
                    f"extra key {key!r} is refused because {reason}; a connection passes Kafka settings "
                    "only through kafka_config, and only allowlisted tuning keys"
                )
            if "." in str(key):
                raise ValueError(
                    f"extra key {key!r} looks like a librdkafka setting but is not a field of a dataworks "
                    "connection; put allowlisted tuning keys into kafka_config"
                )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> DataWorksConnectionSettings:
        if self.ssl_ca and not self.ssl_ca.startswith(_PEM_MARKER) and not os.path.isfile(self.ssl_ca):
            raise ValueError(
                f"CA certificate file {self.ssl_ca!r} does not exist on this host; copy the ApsaraMQ for "
                "Kafka CA file there, or paste its PEM text (starting with -----BEGIN CERTIFICATE-----) into "
                "the connection's ssl_ca field"
            )
        return self

    @property
    def effective_security_protocol(self) -> SecurityProtocol:
        """The security protocol, defaulting to SASL_SSL when a SASL user is set (as ApsaraMQ needs)."""
        if self.security_protocol:
            return self.security_protocol
        return "SASL_SSL" if self.sasl_username else "PLAINTEXT"

    @classmethod
    def from_connection(
        cls, conn: Any, extra: Mapping[str, Any] | None = None
    ) -> DataWorksConnectionSettings:
        """
        Read and check the settings of an Airflow connection.

        :param conn: an ``airflow.sdk.Connection`` (or anything with the same attributes).
        :param extra: the connection's extra, already decoded (the async path decodes it itself).
        :raises DataWorksConnectionConfigError: naming the connection, the field and the fix.
        """
        extra = dict(extra if extra is not None else conn.extra_dejson)
        fields = {
            **extra,
            "bootstrap_servers": extra.get("bootstrap_servers") or _host_and_port(conn.host, conn.port),
            "sasl_username": conn.login or extra.get("sasl_username"),
            "sasl_password": conn.password or extra.get("sasl_password"),
        }
        try:
            return cls(**fields)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in issue['loc']) or 'connection'}: {issue['msg']}"
                for issue in error.errors(include_input=False, include_url=False)
            )
            raise DataWorksConnectionConfigError(
                f"Connection {conn.conn_id!r} of type dataworks is not valid: {problems}"
            ) from None

    def require_kafka(self, conn_id: str) -> None:
        """Fail with the fix when the connection has no Kafka bootstrap servers."""
        if not self.bootstrap_servers:
            raise DataWorksConnectionConfigError(
                f"Connection {conn_id!r} has no Kafka bootstrap servers: put them (host:port, "
                "comma-separated, from the DataWorks OpenEvent or ApsaraMQ for Kafka console) into the "
                "connection's Host field"
            )

    def require_topic(self, conn_id: str, topic: str | None) -> str:
        """Return the topic to read; fail with the fix when neither the task nor the connection names one."""
        chosen = topic or self.topic
        if not chosen:
            raise DataWorksConnectionConfigError(
                f"No Kafka topic: set the topic field of connection {conn_id!r} (the topic DataWorks or your "
                "EventBridge rule writes to), or pass topic= to the task"
            )
        return chosen

    def require_openapi(self, conn_id: str) -> None:
        """Fail with the fix when the connection has no AccessKey pair."""
        if not self.access_key_id or not self.access_key_secret:
            raise DataWorksConnectionConfigError(
                f"Connection {conn_id!r} has no DataWorks AccessKey: set access_key_id and access_key_secret "
                "(RAM console, AccessKey management) to use the DataWorks OpenAPI"
            )


def _host_and_port(host: str | None, port: int | None) -> str | None:
    if not host:
        return None
    servers = [server.strip() for server in host.split(",") if server.strip()]
    if port:
        servers = [server if ":" in server else f"{server}:{port}" for server in servers]
    return ",".join(servers)
