"""The dataworks connection: parsed, checked, and mapped to librdkafka through an allowlist."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Connection

from airflow_provider_dataworks.exceptions import DataWorksConnectionConfigError
from airflow_provider_dataworks.hooks import DataWorksConnectionSettings, DataWorksHook

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _connection(**extra):
    return Connection(
        conn_id="dw_test",
        conn_type="dataworks",
        host="broker-1:9093,broker-2:9093",
        login="kafka-user",
        password="kafka-password-value",
        extra=json.dumps(extra),
    )


def _hook(**extra) -> DataWorksHook:
    settings = DataWorksConnectionSettings.from_connection(_connection(**extra))
    return DataWorksHook("dw_test", settings=settings)


def test_kafka_config_for_apsaramq_uses_sasl_ssl_with_pem_and_no_hostname_check():
    config = _hook(ssl_ca=CA_PEM, ssl_verify_hostname=False, topic="t").kafka_config()

    assert config["bootstrap.servers"] == "broker-1:9093,broker-2:9093"
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "PLAIN"
    assert config["sasl.username"] == "kafka-user"
    assert config["sasl.password"] == "kafka-password-value"
    assert config["ssl.ca.pem"] == CA_PEM.strip()
    assert config["ssl.endpoint.identification.algorithm"] == "none"


def test_consumer_config_never_commits_by_itself():
    config = _hook(consumer_group="g1").consumer_config()

    assert config["group.id"] == "g1"
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False


def test_settings_when_ca_file_missing_names_the_file_and_the_fix():
    with pytest.raises(DataWorksConnectionConfigError, match=r"/nope/ca.pem.*does not exist.*PEM text"):
        DataWorksConnectionSettings.from_connection(_connection(ssl_ca="/nope/ca.pem"))


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("plugin.library.paths", "loads shared libraries"),
        ("oauthbearer_token_refresh_cb", "callback"),
        ("enable.ssl.certificate.verification", "TLS certificate checks off"),
        ("ssl.key.location", "reads files"),
        ("bootstrap.servers", "not allowed"),
    ],
)
def test_kafka_config_when_key_loads_code_or_files_is_refused(key, reason):
    with pytest.raises(DataWorksConnectionConfigError, match=reason):
        DataWorksConnectionSettings.from_connection(_connection(kafka_config={key: "x"}))


def test_kafka_config_when_tuning_key_allowlisted_is_passed():
    config = _hook(kafka_config={"session.timeout.ms": 6000}).kafka_config()

    assert config["session.timeout.ms"] == 6000


def test_settings_repr_and_errors_never_show_secrets():
    conn = _connection(access_key_id="AKID", access_key_secret="ak-secret-value", ssl_ca="/nope")

    with pytest.raises(DataWorksConnectionConfigError) as error:
        DataWorksConnectionSettings.from_connection(conn)
    assert "kafka-password-value" not in str(error.value)
    assert "ak-secret-value" not in str(error.value)

    settings = DataWorksConnectionSettings.from_connection(_connection(access_key_secret="ak-secret-value"))
    assert "ak-secret-value" not in repr(settings)
    assert "kafka-password-value" not in repr(settings)


def test_security_protocol_defaults_to_plaintext_without_sasl_user():
    conn = Connection(conn_id="plain", conn_type="dataworks", host="127.0.0.1:9092")
    settings = DataWorksConnectionSettings.from_connection(conn)

    assert DataWorksHook("plain", settings=settings).kafka_config()["security.protocol"] == "PLAINTEXT"


def test_missing_bootstrap_servers_names_the_host_field():
    conn = Connection(conn_id="empty", conn_type="dataworks")
    hook = DataWorksHook("empty", settings=DataWorksConnectionSettings.from_connection(conn))

    with pytest.raises(DataWorksConnectionConfigError, match="Host field"):
        hook.kafka_config()


def test_missing_topic_names_both_places_to_set_it():
    with pytest.raises(DataWorksConnectionConfigError, match=r"topic field.*topic= to the task"):
        _hook().settings.require_topic("dw_test", None)


def test_openapi_without_access_key_names_the_fields():
    with pytest.raises(DataWorksConnectionConfigError, match="access_key_id and access_key_secret"):
        _hook().get_openapi_client()


def test_connection_from_uri_json_env_is_readable(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_DW_ENV",
        json.dumps(
            {"conn_type": "dataworks", "host": "h:1", "extra": {"topic": "events", "protocol": "HTTP"}}
        ),
    )

    settings = DataWorksHook("dw_env").settings

    assert settings.topic == "events"
    assert settings.protocol == "http"
