"""Exceptions callers of this provider can branch on."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException


class DataWorksError(AirflowException):
    """Base class of every error this provider raises on purpose."""


class DataWorksConnectionConfigError(DataWorksError, ValueError):
    """The ``dataworks`` connection is missing a field or has a value that cannot work."""


class DataWorksKafkaError(DataWorksError):
    """Kafka refused or failed an operation in a way that waiting will not fix."""


class DataWorksKafkaUnreachableError(DataWorksKafkaError):
    """No Kafka broker answered: a wrong host or port, or brokers that are down (waiting may fix it)."""


class DataWorksOpenAPIError(DataWorksError):
    """
    A DataWorks OpenAPI call failed.

    :param api: the operation name, for example ``GetInstance``.
    :param code: DataWorks' error code, when it sent one.
    :param request_id: the request id to quote to Alibaba Cloud support.
    """

    def __init__(self, message: str, *, api: str, code: str | None = None, request_id: str | None = None):
        super().__init__(message)
        self.api = api
        self.code = code
        self.request_id = request_id
