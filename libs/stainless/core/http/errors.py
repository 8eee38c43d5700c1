"""Refusals of every HTTP app: one hierarchy, one body ``{"error", "detail"}``.

An exception's ``status`` and ``code`` become the answer; request validation errors
(422, ``invalid``) and the framework's own refusals (404, 405, a body refused while it
streams) are answered the same way, never in FastAPI's own shape.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

__all__ = [
    "Conflict",
    "ErrorBody",
    "Forbidden",
    "Invalid",
    "NotFound",
    "ServiceError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "error_response",
    "install_error_handlers",
]


class ServiceError(Exception):
    """A request refused; ``status`` and ``code`` become the HTTP answer."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class Conflict(ServiceError):
    status, code = 409, "conflict"


class TooLarge(ServiceError):
    status, code = 413, "too_large"


class Invalid(ServiceError):
    status, code = 422, "invalid"


class Unavailable(ServiceError):
    """A service the answer depends on (the identity provider) cannot be reached."""

    status, code = 503, "unavailable"


class ErrorBody(BaseModel):
    """The body of every refusal."""

    error: str
    detail: str


def error_response(status: int, code: str, detail: str) -> JSONResponse:
    """A refusal as JSON (``WWW-Authenticate: Bearer`` on a 401)."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


_MAX_DETAIL = 1000


def _validation_detail(exc: RequestValidationError) -> str:
    """Where and why, never the input itself (bounded: a key may come from the input)."""
    detail = "; ".join(
        f"{'.'.join(str(part)[:64] for part in error['loc'])}: {error['msg']}"
        for error in exc.errors()
    )
    return detail if len(detail) <= _MAX_DETAIL else detail[: _MAX_DETAIL - 1] + "…"


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found"}
_CODES |= {405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid"}


def install_error_handlers(app: FastAPI) -> None:
    """Answer ``ServiceError``, request validation errors and the framework's refusals with
    ``ErrorBody``."""

    @app.exception_handler(HTTPException)
    def _framework(_: Request, exc: HTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or _CODES.get(exc.status_code, "error")
        response = error_response(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(ServiceError)
    def _refused(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid", _validation_detail(exc))
