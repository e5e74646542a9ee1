"""Checks Alibaba Cloud request signatures: ACS3-HMAC-SHA256 (SDK default) and the RPC V2 HMAC-SHA1 form."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from urllib.parse import quote

from airflow_provider_dataworks.local.emulator.model import EmulatorError

_V3_PREFIX = "ACS3-HMAC-SHA256 "


def _missing_key(access_key_id: str) -> EmulatorError:
    return EmulatorError(
        f"Specified access key is not found: {access_key_id!r}.",
        code="InvalidAccessKeyId.NotFound",
        http_status=404,
    )


def _mismatch() -> EmulatorError:
    return EmulatorError(
        "Specified signature is not matched with our calculation.",
        code="SignatureDoesNotMatch",
        http_status=400,
    )


def _encode(text: str) -> str:
    return quote(text, safe="~", encoding="utf-8")


def _canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(f"{key}={_encode(query[key])}" for key in sorted(query))


def _parse_authorization(value: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in value[len(_V3_PREFIX) :].split(","):
        name, _, content = item.strip().partition("=")
        parts[name] = content
    if not {"Credential", "SignedHeaders", "Signature"} <= parts.keys():
        raise EmulatorError(
            "The Authorization header lacks Credential, SignedHeaders or Signature.",
            code="IncompleteSignature",
        )
    return parts


def verify_v3(
    *,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
    secret_for: Callable[[str], str | None],
) -> str:
    """Check an ``Authorization: ACS3-HMAC-SHA256 ...`` request and return its AccessKey id.

    The canonical request is rebuilt from what arrived: method, path, the sorted and percent-encoded
    query, the signed headers (lowercase name, trimmed value), the signed-header list, and the SHA-256
    of the body as received, so a changed body fails too.

    :param headers: request headers with lowercase names.
    :param secret_for: returns the secret of an AccessKey id, or ``None`` when the id is unknown.
    :raises EmulatorError: unknown AccessKey (404) or a signature that does not match (400).
    """
    parts = _parse_authorization(headers.get("authorization", ""))
    access_key_id = parts["Credential"]
    secret = secret_for(access_key_id)
    if secret is None:
        raise _missing_key(access_key_id)

    signed_names = [name.strip().lower() for name in parts["SignedHeaders"].split(";") if name.strip()]
    canonical_headers = "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in signed_names)
    canonical_request = "\n".join(
        [
            method.upper(),
            path or "/",
            _canonical_query(query),
            canonical_headers,
            ";".join(signed_names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    string_to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    expected = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts["Signature"].lower()):
        raise _mismatch()
    return access_key_id


def verify_v2(
    *,
    method: str,
    query: Mapping[str, str],
    form: Mapping[str, str],
    secret_for: Callable[[str], str | None],
) -> str:
    """Check an RPC request signed in the query (``Signature``, ``SignatureMethod=HMAC-SHA1``).

    The signed parameters are the query (without ``Signature``) merged with the form body.

    :raises EmulatorError: unknown AccessKey (404) or a signature that does not match (400).
    """
    access_key_id = query.get("AccessKeyId", "")
    secret = secret_for(access_key_id)
    if secret is None:
        raise _missing_key(access_key_id)
    if query.get("SignatureMethod", "HMAC-SHA1") != "HMAC-SHA1":
        raise EmulatorError("Only SignatureMethod HMAC-SHA1 is supported.", code="InvalidSignatureMethod")

    params = {**{k: v for k, v in query.items() if k != "Signature"}, **form}
    canonical = "&".join(f"{_encode(key)}={_encode(params[key])}" for key in sorted(params))
    string_to_sign = f"{method.upper()}&{_encode('/')}&{_encode(canonical)}"
    digest = hmac.new((secret + "&").encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1).digest()
    if not hmac.compare_digest(base64.b64encode(digest).decode("ascii"), query.get("Signature", "")):
        raise _mismatch()
    return access_key_id


def verify(
    *,
    method: str,
    path: str,
    query: Mapping[str, str],
    form: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
    secret_for: Callable[[str], str | None],
) -> str:
    """Check whichever signature a request carries and return its AccessKey id.

    :raises EmulatorError: no signature (400 ``MissingParameter``), unknown AccessKey, wrong signature.
    """
    if headers.get("authorization", "").startswith(_V3_PREFIX):
        return verify_v3(
            method=method, path=path, query=query, headers=headers, body=body, secret_for=secret_for
        )
    if "Signature" in query:
        return verify_v2(method=method, query=query, form=form, secret_for=secret_for)
    raise EmulatorError(
        "The request is not signed: send an ACS3-HMAC-SHA256 Authorization header or a V2 Signature.",
        code="MissingParameter",
    )
