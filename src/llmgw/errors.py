"""The gateway's exception tree.

Every error that reaches a client is a ``GatewayError``. The class fixes the
HTTP status, the OpenAI error ``type`` and ``code``, who is to blame and
whether a retry can help. ``server.error_response`` is the one place that
turns it into a response::

    GatewayError
    ├── ClientError                     blame: client
    │   ├── InvalidRequest              400 invalid_request_error
    │   │   └── InputTooLong            400 context_length_exceeded
    │   ├── AuthenticationFailed        401 invalid_api_key
    │   ├── ModelNotAllowed             403 model_not_allowed
    │   ├── ModelNotFound               404 model_not_found
    │   ├── NotFound                    404 not_found
    │   ├── MethodNotAllowed            405 method_not_allowed
    │   ├── RequestTimeout              408 request_timeout
    │   ├── BodyTooLarge                413 request_too_large
    │   └── RateLimited                 429 rate_limit_exceeded
    │       ├── QuotaExceeded           429 quota_exceeded
    │       └── BudgetExceeded          429 budget_exceeded
    ├── UpstreamError                   blame: upstream
    │   ├── UpstreamUnreachable         502 upstream_unreachable
    │   ├── UpstreamRedirect            502 upstream_redirect
    │   ├── UpstreamTimeout             504 upstream_timeout
    │   └── UpstreamHTTPError           the upstream's own status and body
    └── InternalError                   500 blame: gateway
        ├── BackendUnavailable          503 (Redis or the ledger sink)
        └── ShuttingDown                503 server_shutdown
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class Blame(StrEnum):
    CLIENT = "client"
    UPSTREAM = "upstream"
    GATEWAY = "gateway"


class GatewayError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = None
    blame: ClassVar[Blame] = Blame.GATEWAY
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def http_status(self) -> int:
        return self.status

    @property
    def kind(self) -> str:
        """The short error name recorded in the ledger and the request log."""
        return self.code or self.error_type

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class ClientError(GatewayError):
    status = 400
    error_type = "invalid_request_error"
    blame = Blame.CLIENT


class InvalidRequest(ClientError):
    code = "invalid_request"


class InputTooLong(InvalidRequest):
    code = "context_length_exceeded"


class AuthenticationFailed(ClientError):
    status = 401
    code = "invalid_api_key"


class ModelNotAllowed(ClientError):
    status = 403
    error_type = "permission_error"
    code = "model_not_allowed"


class ModelNotFound(ClientError):
    status = 404
    code = "model_not_found"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(ClientError):
    status = 408
    code = "request_timeout"


class BodyTooLarge(ClientError):
    status = 413
    code = "request_too_large"


class RateLimited(ClientError):
    """A limit rejected the request.

    ``limit_kind`` is ``requests``, ``tokens`` or ``concurrency`` here, and
    ``quota`` or ``budget`` in the subclasses. ``retry_after`` is None when
    the request exceeds the whole limit, so a retry cannot help.
    """

    status = 429
    code = "rate_limit_exceeded"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        limit_kind: str,
        retry_after: float | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, headers=headers)
        self.limit_kind = limit_kind
        self.retry_after = retry_after

    @property
    def kind(self) -> str:
        return f"rate_limit_{self.limit_kind}"

    def openai_body(self) -> dict[str, Any]:
        body = super().openai_body()
        # OpenAI puts the exhausted resource in "type" for rate limits.
        body["error"]["type"] = self.limit_kind
        return body


class QuotaExceeded(RateLimited):
    """A token quota of a day, week or month is used up."""

    code = "quota_exceeded"

    @property
    def kind(self) -> str:
        return self.code

    def openai_body(self) -> dict[str, Any]:
        body = super().openai_body()
        body["error"]["type"] = self.code
        return body


class BudgetExceeded(RateLimited):
    """A US dollar budget of a day, week or month is spent."""

    code = "budget_exceeded"

    @property
    def kind(self) -> str:
        return self.code

    def openai_body(self) -> dict[str, Any]:
        body = super().openai_body()
        body["error"]["type"] = self.code
        return body


class UpstreamError(GatewayError):
    status = 502
    error_type = "upstream_error"
    blame = Blame.UPSTREAM
    retryable = True


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"


class UpstreamRedirect(UpstreamError):
    """The provider responded with a redirect. The gateway does not follow
    it, because that would resend the prompt to an unconfigured address."""

    code = "upstream_redirect"
    retryable = False


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamHTTPError(UpstreamError):
    """An error status from the provider, passed on with its own body."""

    def __init__(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str]
    ) -> None:
        super().__init__(f"upstream returned HTTP {status}", headers=headers)
        self.upstream_status = status
        self.body = body
        self.content_type = content_type

    @property
    def http_status(self) -> int:
        return self.upstream_status

    @property
    def kind(self) -> str:
        return f"upstream_http_{self.upstream_status}"


class InternalError(GatewayError):
    pass


class BackendUnavailable(InternalError):
    status = 503
    code = "backend_unavailable"
    retryable = True


class ShuttingDown(InternalError):
    """The shutdown grace period ended before the request finished."""

    status = 503
    code = "server_shutdown"
    retryable = True
