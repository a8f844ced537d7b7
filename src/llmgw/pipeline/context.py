"""The state one request carries through the pipeline phases."""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from llmgw.errors import GatewayError
from llmgw.pipeline.admit import Reservation
from llmgw.pipeline.authenticate import Principal
from llmgw.pipeline.policy import Deployment
from llmgw.protocols.openai import Usage

# A random prefix per process and a counter: unique across processes and
# restarts without a urandom system call per request, as uuid4 would make.
_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count(1)


def new_request_id() -> str:
    return f"req_{_ID_PREFIX}{next(_id_counter):012x}"


@dataclass
class RequestContext:
    route: str
    request_id: str = field(default_factory=new_request_id)
    ts: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)

    principal: Principal | None = None
    model: str | None = None
    deployment: Deployment | None = None
    reservation: Reservation | None = None
    # What the ledger needs to count the prompt later if it was not counted
    # before forwarding: the messages or embeddings input.
    prompt: Any = None
    input_tokens: int | None = None  # local count, None until counted
    input_estimated: bool = False
    forwarded: bool = False
    usage: Usage | None = None  # as the upstream reported it
    output_tally: int = 0  # output tokens counted locally
    streamed: bool = False
    # Set once the client has been sent "data: [DONE]": a client that hangs
    # up after that (the openai SDK does) received the whole stream.
    stream_complete: bool = False
    cut_by_shutdown: bool = False
    status: int = 200
    error_type: str | None = None
    first_byte_at: float | None = None
    client_aborted: bool = False

    def fail(self, error: GatewayError) -> None:
        self.status = error.http_status
        self.error_type = error.kind

    def mark_first_byte(self) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()

    @property
    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    @property
    def ttft_ms(self) -> float | None:
        if self.first_byte_at is None:
            return None
        return (self.first_byte_at - self.started) * 1000
