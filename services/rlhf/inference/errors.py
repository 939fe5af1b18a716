"""Domain errors of the chat API. The servicer maps each class to one gRPC status code."""
from __future__ import annotations


class ApiError(Exception):
    """A request the service refuses or cannot complete; the message is shown to the client."""

    code = "INTERNAL"


class InvalidArgument(ApiError):
    code = "INVALID_ARGUMENT"


class NotFound(ApiError):
    code = "NOT_FOUND"


class PermissionDenied(ApiError):
    code = "PERMISSION_DENIED"


class ResourceExhausted(ApiError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(ApiError):
    code = "UNAVAILABLE"


class DeadlineExceeded(ApiError):
    code = "DEADLINE_EXCEEDED"


class Cancelled(ApiError):
    code = "CANCELLED"


class Internal(ApiError):
    code = "INTERNAL"
