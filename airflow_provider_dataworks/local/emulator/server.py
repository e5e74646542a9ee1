"""HTTP side of the emulator: the signed DataWorks OpenAPI on ``/``, the control API on ``/_emulator/``."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from airflow_provider_dataworks.local.emulator import signature
from airflow_provider_dataworks.local.emulator.model import EmulatorError, Fault, Model
from airflow_provider_dataworks.local.emulator.openapi import OpenApi, error_body

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_emulator/"

#: ``control(method, path_parts, payload) -> (http_status, json_body)``
ControlHandler = Callable[[str, list[str], Any], tuple[int, Any]]


class Response:
    """An HTTP answer: status, JSON body and extra headers."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}


class Gateway:
    """Does what the Alibaba Cloud API gateway does before DataWorks sees a request.

    In order: find the action, check the signature, apply a planned fault, run the operation.
    """

    def __init__(
        self,
        *,
        model: Model,
        openapi: OpenApi,
        secret_for: Callable[[str], str | None],
        stopping: threading.Event,
    ) -> None:
        self._model = model
        self._openapi = openapi
        self._secret_for = secret_for
        self._stopping = stopping

    def handle(self, *, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one OpenAPI request."""
        request_id = str(uuid.uuid4()).upper()
        split = urlsplit(target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        form: dict[str, str] = {}
        if "application/x-www-form-urlencoded" in headers.get("content-type", "") and body:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        action = headers.get("x-acs-action") or query.get("Action", "")
        try:
            signature.verify(
                method=method,
                path=split.path,
                query=query,
                form=form,
                headers=headers,
                body=body,
                secret_for=self._secret_for,
            )
            fault = self._model.take_fault(action)
            if fault is not None:
                response = self._fault(fault, action, request_id)
                if response is not None:
                    return response
            result = self._openapi.call(action, {**query, **form})
        except EmulatorError as error:
            business = error.code not in _GATEWAY_CODES
            log.info("OpenAPI %s answered %s %s", action or "<none>", error.http_status, error.code)
            return Response(error.http_status, error_body(error, request_id, business=business))
        log.debug("OpenAPI %s answered 200", action)
        with self._model.lock:
            self._model.answered[action] += 1
        return Response(200, {"RequestId": request_id, **result})

    def _fault(self, fault: Fault, action: str, request_id: str) -> Response | None:
        log.info("Injecting fault %s into OpenAPI %s (%d left)", fault.kind, action, fault.remaining)
        if fault.kind == "throttle":
            error = EmulatorError(
                "Request was denied due to api flow control.", code="Throttling.Api", http_status=429
            )
            # The SDK reads x-acs-retry-after as an integer number of milliseconds.
            return Response(
                429,
                error_body(error, request_id, business=False),
                {"x-acs-retry-after": str(fault.retry_after)},
            )
        if fault.kind == "error":
            error = EmulatorError(
                "The request processing has failed due to some unknown error.",
                code=fault.code,
                http_status=fault.http_status,
            )
            return Response(fault.http_status, error_body(error, request_id, business=False))
        self._stopping.wait(fault.seconds)
        return None


_GATEWAY_CODES = frozenset(
    {
        "InvalidAccessKeyId.NotFound",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidSignatureMethod",
        "InvalidAction.NotFound",
    }
)


class _Handler(BaseHTTPRequestHandler):
    server: EmulatorHttpServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith(CONTROL_PREFIX):
            response = self._control(body)
        else:
            headers = {name.lower(): value for name, value in self.headers.items()}
            response = self.server.gateway.handle(
                method=self.command, target=self.path, headers=headers, body=body
            )
        self._send(response)

    def _control(self, body: bytes) -> Response:
        parts = [part for part in urlsplit(self.path).path[len(CONTROL_PREFIX) :].split("/") if part]
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError as error:
            return Response(400, {"error": f"The body is not JSON: {error}"})
        try:
            status, result = self.server.control(self.command, parts, payload)
        except EmulatorError as error:
            return Response(error.http_status if error.http_status < 500 else 400, {"error": str(error)})
        except (ValueError, TypeError, KeyError) as error:
            return Response(400, {"error": f"{type(error).__name__}: {error}"})
        except RuntimeError as error:
            return Response(502, {"error": str(error)})
        return Response(status, result)

    def _send(self, response: Response) -> None:
        payload = json.dumps(response.body, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(response.status)
            self.send_header("content-type", "application/json;charset=utf-8")
            self.send_header("content-length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("The client of %s left before the answer", self.path)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("HTTP %s %s", self.address_string(), format % args)


class EmulatorHttpServer(ThreadingHTTPServer):
    """A threading HTTP server that holds the gateway and the control handler."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], *, gateway: Gateway, control: ControlHandler) -> None:
        super().__init__(address, _Handler)
        self.gateway = gateway
        self.control = control
