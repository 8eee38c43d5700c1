"""Refusals of the results service; ``status`` and ``code`` become the HTTP answer."""

from __future__ import annotations


class ResultsError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(ResultsError):
    status, code = 401, "unauthorized"


class Forbidden(ResultsError):
    status, code = 403, "forbidden"


class NotFound(ResultsError):
    status, code = 404, "not_found"


class Conflict(ResultsError):
    status, code = 409, "conflict"


class Invalid(ResultsError):
    status, code = 422, "invalid"
