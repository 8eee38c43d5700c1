"""Refusals of every HTTP app: one hierarchy, one body ``{"error", "detail"}``.

An exception's ``status`` and ``code`` become the answer; request validation errors are
answered the same way (422, ``invalid``), never in FastAPI's own shape.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

__all__ = [
    "Conflict",
    "ErrorBody",
    "Forbidden",
    "Invalid",
    "NotFound",
    "ServiceError",
    "TooLarge",
    "Unauthorized",
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


class ErrorBody(BaseModel):
    """The body of every refusal."""

    error: str
    detail: str


def error_response(status: int, code: str, detail: str) -> JSONResponse:
    """A refusal as JSON (``WWW-Authenticate: Bearer`` on a 401)."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answer ``ServiceError`` and request validation errors with ``ErrorBody``."""

    @app.exception_handler(ServiceError)
    def _refused(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid", _validation_detail(exc))
