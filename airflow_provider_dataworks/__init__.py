"""Apache Airflow provider for Alibaba Cloud DataWorks events: what Airflow discovers at its entry point."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_INTEGRATION = "Alibaba Cloud DataWorks"


def _string(label: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"label": label, "description": description, "schema": {"type": ["string", "null"], **schema}}


def _secret(label: str, description: str) -> dict[str, Any]:
    return _string(label, description, format="password")


_CONN_FIELDS: dict[str, dict[str, Any]] = {
    "security_protocol": _string(
        "Kafka security protocol",
        "SASL_SSL for the DataWorks shared topic and ApsaraMQ for Kafka over the Internet (port 9093).",
        enum=["SASL_SSL", "SASL_PLAINTEXT", "SSL", "PLAINTEXT"],
        default="SASL_SSL",
    ),
    "sasl_mechanism": _string(
        "SASL mechanism",
        "PLAIN for the DataWorks shared topic; SCRAM for your own ApsaraMQ instance if you configured it.",
        enum=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
        default="PLAIN",
    ),
    "ssl_ca": _string(
        "CA certificate",
        "Path of the CA file on the Airflow hosts, or the PEM text itself (-----BEGIN CERTIFICATE-----...). "
        "ApsaraMQ for Kafka publishes its CA (only-4096-ca-cert) in its documentation.",
        format="multiline",
    ),
    "ssl_verify_hostname": {
        "label": "Verify broker hostname",
        "description": "Turn off for ApsaraMQ for Kafka, whose certificates do not name the broker hosts.",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "topic": _string(
        "Kafka topic",
        "The topic DataWorks OpenEvent (or your EventBridge rule) writes events to.",
    ),
    "consumer_group": _string(
        "Consumer group",
        "The consumer group DataWorks created for the subscription (or one of the five you may add).",
    ),
    "kafka_config": {
        "label": "Extra librdkafka settings",
        "description": "JSON object of tuning settings such as session.timeout.ms; settings that load code "
        "or "
        "files, callbacks and TLS switches are refused.",
        "schema": {"type": ["object", "null"]},
    },
    "access_key_id": _string(
        "AccessKey ID", "DataWorks OpenAPI AccessKey ID (RAM console, AccessKey management)."
    ),
    "access_key_secret": _secret("AccessKey secret", "DataWorks OpenAPI AccessKey secret."),
    "security_token": _secret(
        "STS token", "Optional security token when the AccessKey pair is temporary (STS)."
    ),
    "region_id": _string(
        "Region",
        "Region of the DataWorks workspaces, such as cn-hangzhou or ap-southeast-1.",
        default="cn-hangzhou",
    ),
    "endpoint": _string(
        "OpenAPI endpoint",
        "Leave empty to use the region's endpoint; set host[:port] for a VPC endpoint or the local emulator.",
    ),
    "protocol": _string(
        "OpenAPI protocol", "https, or http for the local emulator.", enum=["https", "http"], default="https"
    ),
    "project_env": _string(
        "DataWorks environment",
        "PROD for the production scheduling system, DEV for the development one.",
        enum=["PROD", "DEV"],
        default="PROD",
    ),
    "extension_code": _string(
        "Extension code",
        "The code of your extension (DataWorks Open Platform > Extensions), used when a verdict task "
        "names none.",
    ),
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider metadata Airflow reads through the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "airflow-provider-dataworks",
        "name": _INTEGRATION,
        "description": "Wait for, schedule on and answer Alibaba Cloud DataWorks events read from Kafka, and "
        "call the DataWorks OpenAPI.",
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://www.alibabacloud.com/help/en/dataworks/",
                "tags": ["alibaba"],
            }
        ],
        "hooks": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_dataworks.hooks.dataworks"],
            }
        ],
        "triggers": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_provider_dataworks.triggers.event",
                    "airflow_provider_dataworks.triggers.instance",
                    "airflow_provider_dataworks.triggers.asset",
                ],
            }
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_provider_dataworks.operators.consumer_groups",
                    "airflow_provider_dataworks.operators.subscription",
                    "airflow_provider_dataworks.operators.extension",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_provider_dataworks.sensors.event",
                    "airflow_provider_dataworks.sensors.instance",
                    "airflow_provider_dataworks.sensors.changes",
                ],
            }
        ],
        "queues": ["airflow_provider_dataworks.queues.dataworks.DataWorksMessageQueueProvider"],
        "connection-types": [
            {
                "connection-type": "dataworks",
                "hook-class-name": "airflow_provider_dataworks.hooks.dataworks.DataWorksHook",
                "hook-name": _INTEGRATION,
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "extra"],
                    "relabeling": {
                        "host": "Kafka bootstrap servers",
                        "port": "Kafka port (for hosts given without one)",
                        "login": "SASL username",
                        "password": "SASL password",
                    },
                    "placeholders": {
                        "host": "host1:9093,host2:9093",
                        "port": "9093",
                        "login": "Kafka user from the DataWorks OpenEvent console",
                        "password": "Kafka password",
                    },
                },
                "conn-fields": _CONN_FIELDS,
            }
        ],
    }
