"""The body of `POST /login`: credentials as JSON or as the OAuth2 password form, read safely.

The body is read up to a small limit (413 beyond it, before parsing), its media type must be
JSON or form-encoded (415 otherwise), and a 422 never echoes the password back.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["LOGIN_BODY_DOC", "LoginForm", "read_login"]

# A login body is a few dozen bytes; anything far larger is refused before parsing.
_MAX_LOGIN_BODY = 8 * 1024


class LoginForm(BaseModel):
    """Credentials, as JSON or as the OAuth2 password form."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)
    # Sent by OAuth2 clients such as the docs' "Authorize" dialog; only `password` is known.
    grant_type: Literal["password"] | None = None


_FORM_SCHEMA = LoginForm.model_json_schema()
#: The request body of `/login` in the OpenAPI document (the route reads the body itself).
LOGIN_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _FORM_SCHEMA},
            "application/x-www-form-urlencoded": {"schema": _FORM_SCHEMA},
        },
    }
}


async def read_login(request: Request) -> LoginForm:
    """The credentials of a `/login` request, JSON or form-encoded; 413, 415 or 422 if not."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    form_encoded = media_type == "application/x-www-form-urlencoded"
    if not form_encoded and media_type not in ("application/json", ""):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send application/json or application/x-www-form-urlencoded",
        )
    body = await _read_body(request, _MAX_LOGIN_BODY)
    try:
        if not form_encoded:
            return LoginForm.model_validate_json(body)
        try:
            fields = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                errors="strict",
                max_num_fields=16,
            )
        except (UnicodeDecodeError, ValueError):
            raise RequestValidationError(
                [{"type": "value_error", "loc": ("body",), "msg": "malformed form body"}]
            ) from None
        return LoginForm.model_validate(dict(fields))
    except ValidationError as exc:
        # Without `input`: a 422 must not echo the password back (it may end up in a log).
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "request body too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "request body too large")
    return bytes(body)
