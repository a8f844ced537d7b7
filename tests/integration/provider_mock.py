"""A fake Anthropic, Gemini, Bedrock, Mistral, vLLM, Ollama and Azure OpenAI
on loopback, replaying the recorded provider traffic in the shared fixtures.

Each provider lives under its own path prefix (``/anthropic``, ``/gemini``
and so on). The upstream model name picks the behaviour: ``up-<scenario>``,
where the scenario is one of

* a recorded fixture: ``text``, ``tool`` and the others in the tables below;
* an error in the provider's own shape: ``error-<status>``;
* a misbehaviour of the provider's ``tool`` stream: ``drip`` (a pause
  before each piece), ``stall`` (no response headers), ``stall-mid``,
  ``reset`` (connection dropped) and ``cut`` (the stream ends halfway);
* a hand-made case: ``cache`` (prompt cache counts added to a recording),
  ``overloaded-mid`` (an Anthropic error event mid-stream), ``corrupt`` (a
  Bedrock frame with a bad CRC32) and ``ignore-stream`` (a whole JSON body
  for a stream request).

Every request is kept in ``requests``. Bedrock requests are checked with
botocore's SigV4 signer, and a request whose signature does not verify gets
403.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from llmgw.protocols.eventstream import encode_event

FIXTURES: Final = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"

ANTHROPIC_KEY: Final = "sk-ant-provider-secret-0123"
GEMINI_KEY: Final = "gemini-provider-secret-4567"
MISTRAL_KEY: Final = "mistral-provider-secret-89ab"
AZURE_KEY: Final = "azure-provider-secret-cdef"
AWS_ACCESS_KEY_ID: Final = "AKIDEXAMPLELLMGW0001"
AWS_SECRET_ACCESS_KEY: Final = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_SESSION_TOKEN: Final = "session-token-example-0001"
AWS_REGION: Final = "us-east-1"

# The SigV4 Authorization header: credential scope, signed headers, signature.
_SIGV4: Final = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)"
    r"/(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<headers>[a-z0-9;-]+),"
    r" Signature=(?P<signature>[0-9a-f]{64})"
)


def fixture(path: str) -> Path:
    return FIXTURES / path


def fixture_json(path: str) -> Any:
    return orjson.loads(fixture(path).read_bytes())


def chunk_lines(path: str) -> list[bytes]:
    """Return the JSON payloads of a ``*.chunks.txt`` fixture, one per line."""
    lines = fixture(path).read_bytes().splitlines()
    return [line for line in lines if line.strip()]


def sse_events(path: str) -> list[bytes]:
    """Split a raw ``*.sse`` fixture into its events, keeping every byte.

    The separator is the blank line, LF or CRLF, and a last event without
    one (as some Anthropic recordings end) is kept as it is.
    """
    data = fixture(path).read_bytes()
    events = []
    start = 0
    for separator in re.finditer(rb"\r\n\r\n|\n\n", data):
        events.append(data[start : separator.end()])
        start = separator.end()
    if start < len(data):
        events.append(data[start:])
    return events


def anthropic_events_from_chunks(path: str) -> list[bytes]:
    """Rebuild an Anthropic stream from one payload per line: an ``event:``
    line with the payload's type, then its ``data:`` line."""
    events = []
    for line in chunk_lines(path):
        event_type = orjson.loads(line)["type"]
        events.append(b"event: " + event_type.encode() + b"\ndata: " + line + b"\n\n")
    return events


def data_events_from_chunks(
    path: str, separator: bytes = b"\n\n", done: bool = False
) -> list[bytes]:
    """Rebuild a ``data:``-only SSE stream (OpenAI, Mistral, Gemini)."""
    events = [b"data: " + line + separator for line in chunk_lines(path)]
    if done:
        events.append(b"data: [DONE]" + separator)
    return events


def bedrock_frames_from_chunks(path: str) -> list[bytes]:
    """Encode decoded Converse events back into event-stream frames.

    Each frame gets the random ``p`` padding field Bedrock adds.
    """
    frames = []
    for line in chunk_lines(path):
        [(event_type, payload)] = orjson.loads(line).items()
        padded = {**payload, "p": secrets.token_hex(4)}
        frames.append(encode_event(event_type, orjson.dumps(padded)))
    return frames


def bedrock_frames_from_capture(path: str) -> list[bytes]:
    """Split a recorded event-stream body at its frame boundaries."""
    data = fixture(path).read_bytes()
    frames = []
    while data:
        total = int.from_bytes(data[:4], "big")
        frames.append(data[:total])
        data = data[total:]
    return frames


def with_cache_usage(body: dict[str, Any], read: int, written: int) -> dict[str, Any]:
    """Return a recorded Anthropic or Converse body with prompt cache counts.

    The recordings have none, so the cache scenarios set them by hand.
    """
    usage = dict(body["usage"])
    if "cache_read_input_tokens" in usage:
        usage["cache_read_input_tokens"] = read
        usage["cache_creation_input_tokens"] = written
    else:
        usage["cacheReadInputTokens"] = read
        usage["cacheWriteInputTokens"] = written
    return {**body, "usage": usage}


def anthropic_cache_stream() -> list[bytes]:
    """The text-then-tool stream with prompt cache counts in message_start."""
    events = sse_events("anthropic/anthropic-messages-stream-text-then-tool-use.sse")
    events[0] = events[0].replace(
        b'"cache_creation_input_tokens":0,"cache_read_input_tokens":0',
        b'"cache_creation_input_tokens":%d,"cache_read_input_tokens":%d'
        % (CACHE_WRITTEN, CACHE_READ),
    )
    return events


# The prompt cache counts of the cache scenarios.
CACHE_READ: Final = 100
CACHE_WRITTEN: Final = 50

# Scenario -> recorded body (non-streaming) or stream pieces, per provider.
ANTHROPIC_BODIES: Final = {
    "text": "anthropic/vercel-anthropic-text.json",
    "tool-no-args": "anthropic/vercel-anthropic-tool-no-args.json",
}
ANTHROPIC_STREAMS: Final[dict[str, Callable[[], list[bytes]]]] = {
    "text": lambda: anthropic_events_from_chunks(
        "anthropic/vercel-anthropic-stream-text.chunks.txt"
    ),
    "tool-no-args": lambda: anthropic_events_from_chunks(
        "anthropic/vercel-anthropic-stream-tool-no-args.chunks.txt"
    ),
    "text-basic": lambda: sse_events(
        "anthropic/anthropic-messages-stream-text-basic.sse"
    ),
    "tool": lambda: sse_events(
        "anthropic/anthropic-messages-stream-text-then-tool-use.sse"
    ),
    "thinking": lambda: sse_events(
        "anthropic/pydantic-anthropic-messages-stream-thinking-padded.sse"
    ),
    "truncated-tool": lambda: sse_events(
        "anthropic/anthropic-messages-stream-max-tokens-truncated-tool-json.sse"
    ),
    "cache": anthropic_cache_stream,
    "overloaded-mid": lambda: [
        *sse_events("anthropic/anthropic-messages-stream-text-then-tool-use.sse")[:4],
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"Overloaded"}}\n\n',
    ],
}
GEMINI_BODIES: Final = {
    "text": "gemini/vercel-google-text.json",
    "tool": "gemini/vercel-google-tool-call.json",
}
GEMINI_STREAMS: Final[dict[str, Callable[[], list[bytes]]]] = {
    "text": lambda: data_events_from_chunks(
        "gemini/vercel-google-stream-text.chunks.txt", b"\r\n\r\n"
    ),
    "tool": lambda: data_events_from_chunks(
        "gemini/vercel-google-stream-tool-call.chunks.txt", b"\r\n\r\n"
    ),
    "crlf": lambda: sse_events(
        "gemini/pydantic-gemini-stream-generate-content-crlf.sse"
    ),
}
BEDROCK_BODIES: Final = {
    "text": "bedrock/vercel-bedrock-converse-text.json",
    "tool": "bedrock/vercel-bedrock-converse-tool-call.json",
    "reasoning": "bedrock/vercel-bedrock-converse-reasoning.json",
}
BEDROCK_STREAMS: Final[dict[str, Callable[[], list[bytes]]]] = {
    "text": lambda: bedrock_frames_from_chunks(
        "bedrock/vercel-bedrock-converse-stream-text.chunks.txt"
    ),
    "tool": lambda: bedrock_frames_from_chunks(
        "bedrock/vercel-bedrock-converse-stream-tool-call.chunks.txt"
    ),
    "reasoning": lambda: bedrock_frames_from_chunks(
        "bedrock/vercel-bedrock-converse-stream-reasoning.chunks.txt"
    ),
    "nova-micro-v1:0": lambda: bedrock_frames_from_capture(
        "bedrock/pydantic-bedrock-converse-stream-nova-micro.eventstream.bin"
    ),
}
MISTRAL_BODIES: Final = {
    "text": "mistral/vercel-mistral-text.json",
    "tool": "mistral/vercel-mistral-tool-call.json",
}
MISTRAL_STREAMS: Final[dict[str, Callable[[], list[bytes]]]] = {
    "text": lambda: data_events_from_chunks(
        "mistral/vercel-mistral-stream-text.chunks.txt", done=True
    ),
    "tool": lambda: data_events_from_chunks(
        "mistral/vercel-mistral-stream-tool-call.chunks.txt", done=True
    ),
    "incremental-tool": lambda: data_events_from_chunks(
        "mistral/vercel-mistral-stream-incremental-tool-call.chunks.txt", done=True
    ),
}
OLLAMA_BODIES: Final = {
    "reasoning": "ollama/pydantic-ollama-cloud-chat-text-with-reasoning.response.json",
    "tool": "ollama/pydantic-ollama-cloud-chat-tool-call.response.json",
    "json-schema": "ollama/pydantic-ollama-local-chat-json-schema.response.json",
}
OPENAI_BODY: Final = "openai/vercel-openai-chat-text.json"
OPENAI_STREAM: Final = "openai/openai-chat-stream-text.sse"
OPENAI_EMBEDDING: Final = "openai/vercel-openai-embedding.json"

# The stream the misbehaviour scenarios (drip, stall-mid, reset, cut) use.
DEFAULT_STREAM: Final = "tool"
# Seconds the drip scenario waits before each stream piece.
DRIP_INTERVAL: Final = 0.1

ERROR_NAMES: Final = {
    400: ("invalid_request_error", "INVALID_ARGUMENT", "ValidationException"),
    401: ("authentication_error", "UNAUTHENTICATED", "UnrecognizedClientException"),
    403: ("permission_error", "PERMISSION_DENIED", "AccessDeniedException"),
    429: ("rate_limit_error", "RESOURCE_EXHAUSTED", "ThrottlingException"),
    500: ("api_error", "INTERNAL", "InternalServerException"),
    503: ("api_error", "UNAVAILABLE", "ServiceUnavailableException"),
    529: ("overloaded_error", "UNAVAILABLE", "ServiceUnavailableException"),
}


def error_message(provider: str, status: int, key: str) -> str:
    """An error message that echoes the credential, to test scrubbing."""
    return f"{provider} rejected the request with HTTP {status} for key {key}"


@dataclass
class SeenRequest:
    provider: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    # None for requests that are not Bedrock's.
    sigv4_verified: bool | None = None

    def json(self) -> Any:
        return orjson.loads(self.body)


def scenario_of(model: str) -> str:
    return model.removeprefix("up-")


@dataclass
class ProviderMock:
    requests: list[SeenRequest] = field(default_factory=list)
    # Set when a streaming response noticed that the gateway went away.
    stream_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    # The secret the SigV4 check uses; a test may change it to see a 403.
    aws_secret_access_key: str = AWS_SECRET_ACCESS_KEY

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/anthropic/v1/messages", self.anthropic)
        app.router.add_get("/anthropic/v1/models", self.anthropic_models)
        app.router.add_post("/gemini/v1beta/models/{target}", self.gemini)
        app.router.add_get("/gemini/v1beta/models", self.gemini_models)
        app.router.add_post("/bedrock/model/{model}/{operation}", self.bedrock)
        for flavor in ("mistral", "vllm", "ollama"):
            app.router.add_post(f"/{flavor}/v1/chat/completions", self.compat)
        app.router.add_post("/mistral/v1/embeddings", self.openai_embeddings)
        app.router.add_post(
            "/azure/openai/deployments/{deployment}/{operation:.+}", self.azure
        )
        app.router.add_post("/azure/openai/v1/{operation:.+}", self.azure)
        return app

    async def _record(self, request: web.Request, provider: str) -> SeenRequest:
        seen = SeenRequest(
            provider=provider,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=await request.read(),
        )
        self.requests.append(seen)
        return seen

    def last(self, provider: str) -> SeenRequest:
        return [seen for seen in self.requests if seen.provider == provider][-1]

    # Anthropic

    async def anthropic(self, request: web.Request) -> web.StreamResponse:
        seen = await self._record(request, "anthropic")
        body = seen.json()
        scenario = scenario_of(body["model"])
        if scenario.startswith("error-"):
            return self._anthropic_error(int(scenario.removeprefix("error-")))
        if body.get("stream"):
            pieces = ANTHROPIC_STREAMS.get(scenario, ANTHROPIC_STREAMS[DEFAULT_STREAM])
            return await self._stream(request, pieces(), "text/event-stream", scenario)
        await self._maybe_stall(scenario)
        if scenario == "cache":
            recorded = fixture_json(ANTHROPIC_BODIES["text"])
            return web.json_response(
                with_cache_usage(recorded, CACHE_READ, CACHE_WRITTEN)
            )
        return web.json_response(fixture_json(ANTHROPIC_BODIES[scenario]))

    def _anthropic_error(self, status: int) -> web.Response:
        error_type = ERROR_NAMES[status][0]
        body = {
            "type": "error",
            "error": {
                "type": error_type,
                "message": error_message("Anthropic", status, ANTHROPIC_KEY),
            },
            "request_id": "req_011CMockAnthropic",
        }
        headers = {"request-id": "req_011CMockAnthropic"}
        if status == 429:
            headers["retry-after"] = "12"
            headers["anthropic-ratelimit-requests-remaining"] = "0"
        if status in (429, 529):
            headers["x-should-retry"] = "true"
        return web.json_response(body, status=status, headers=headers)

    async def anthropic_models(self, request: web.Request) -> web.Response:
        await self._record(request, "anthropic")
        names = ["claude-listed-1", "claude-listed-2"]
        return web.json_response(
            {
                "data": [{"type": "model", "id": name} for name in names],
                "has_more": False,
                "first_id": names[0],
                "last_id": names[-1],
            }
        )

    # Gemini

    async def gemini_models(self, request: web.Request) -> web.Response:
        await self._record(request, "gemini")
        names = ["models/gemini-listed-1", "models/text-embedding-004"]
        return web.json_response({"models": [{"name": name} for name in names]})

    async def gemini(self, request: web.Request) -> web.StreamResponse:
        seen = await self._record(request, "gemini")
        model, _, method = request.match_info["target"].partition(":")
        scenario = scenario_of(model)
        if scenario.startswith("error-"):
            return self._gemini_error(int(scenario.removeprefix("error-")))
        if scenario == "invalid-key":
            return self._gemini_invalid_key()
        if method == "batchEmbedContents":
            return self._gemini_embeddings(seen.json())
        if method == "streamGenerateContent":
            pieces = GEMINI_STREAMS.get(scenario, GEMINI_STREAMS[DEFAULT_STREAM])
            return await self._stream(request, pieces(), "text/event-stream", scenario)
        await self._maybe_stall(scenario)
        return web.json_response(fixture_json(GEMINI_BODIES[scenario]))

    def _gemini_error(self, status: int) -> web.Response:
        if status == 429:
            body = fixture_json("gemini/vercel-google-error-429-retry-info.json")
        else:
            body = {
                "error": {
                    "code": status,
                    "message": error_message("Gemini", status, GEMINI_KEY),
                    "status": ERROR_NAMES[status][1],
                }
            }
        return web.json_response(body, status=status)

    def _gemini_invalid_key(self) -> web.Response:
        """The Gemini API's response to an invalid API key: 400, not 401."""
        message = error_message("Gemini", 400, GEMINI_KEY)
        body = {
            "error": {
                "code": 400,
                "message": message,
                "status": "INVALID_ARGUMENT",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    },
                    {
                        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                        "locale": "en-US",
                        "message": message,
                    },
                ],
            }
        }
        return web.json_response(body, status=400)

    def _gemini_embeddings(self, body: dict[str, Any]) -> web.Response:
        embeddings = []
        for index, item in enumerate(body["requests"]):
            size = item.get("outputDimensionality", 3)
            embeddings.append({"values": [index + 0.5 * k for k in range(size)]})
        return web.json_response({"embeddings": embeddings})

    # Bedrock

    async def bedrock(self, request: web.Request) -> web.StreamResponse:
        seen = await self._record(request, "bedrock")
        seen.sigv4_verified = self._verify_sigv4(request, seen.body)
        if not seen.sigv4_verified:
            return web.json_response(
                {"message": "The request signature we calculated does not match."},
                status=403,
                headers={"x-amzn-ErrorType": "InvalidSignatureException:http://x/"},
            )
        scenario = scenario_of(request.match_info["model"])
        if scenario.startswith("error-"):
            return self._bedrock_error(int(scenario.removeprefix("error-")))
        request_id = {"x-amzn-RequestId": "5b0c6f1e-mock-bedrock"}
        if request.match_info["operation"] == "converse-stream":
            pieces = BEDROCK_STREAMS.get(scenario, BEDROCK_STREAMS[DEFAULT_STREAM])()
            if scenario == "corrupt":
                # Flip one payload byte, so the frame's CRC32 no longer matches.
                broken = bytearray(pieces[1])
                broken[-5] ^= 0xFF
                pieces[1] = bytes(broken)
            return await self._stream(
                request,
                pieces,
                "application/vnd.amazon.eventstream",
                scenario,
                headers=request_id,
            )
        await self._maybe_stall(scenario)
        if scenario == "cache":
            recorded = fixture_json(BEDROCK_BODIES["text"])
            body = with_cache_usage(recorded, CACHE_READ, CACHE_WRITTEN)
        else:
            body = fixture_json(BEDROCK_BODIES[scenario])
        return web.json_response(body, headers=request_id)

    def _verify_sigv4(self, request: web.Request, body: bytes) -> bool:
        """Recompute the signature with the test credentials and compare."""
        match = _SIGV4.fullmatch(request.headers.get("Authorization", ""))
        if match is None or match["service"] != "bedrock":
            return False
        signed = match["headers"].split(";")
        headers = {name: request.headers.get(name, "") for name in signed}
        url = f"http://{request.host}{request.raw_path}"
        signable = AWSRequest(method="POST", url=url, data=body, headers=headers)
        signable.context["timestamp"] = request.headers.get("X-Amz-Date", "")
        credentials = Credentials(
            match["key"], self.aws_secret_access_key, AWS_SESSION_TOKEN
        )
        signer = SigV4Auth(credentials, match["service"], match["region"])
        canonical = signer.canonical_request(signable)
        expected = signer.signature(
            signer.string_to_sign(signable, canonical), signable
        )
        return secrets.compare_digest(expected, match["signature"])

    def _bedrock_error(self, status: int) -> web.Response:
        error_type = ERROR_NAMES[status][2]
        headers = {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/"}
        if status == 429:
            headers["retry-after"] = "3"
        return web.json_response(
            {"message": error_message("Bedrock", status, AWS_SECRET_ACCESS_KEY)},
            status=status,
            headers=headers,
        )

    # Mistral, vLLM and Ollama

    async def compat(self, request: web.Request) -> web.StreamResponse:
        flavor = request.path.split("/")[1]
        seen = await self._record(request, flavor)
        body = seen.json()
        scenario = scenario_of(body["model"])
        if scenario.startswith("error-"):
            # Echo the key the request carried, as OpenAI's 401 messages do.
            key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            status = int(scenario.removeprefix("error-"))
            return self._compat_error(flavor, status, key)
        bodies = OLLAMA_BODIES if flavor == "ollama" else MISTRAL_BODIES
        if scenario == "ignore-stream":
            # Some servers respond to "stream": true with one whole body.
            return web.json_response(fixture_json(MISTRAL_BODIES["tool"]))
        if body.get("stream"):
            pieces = MISTRAL_STREAMS.get(scenario, MISTRAL_STREAMS[DEFAULT_STREAM])
            return await self._stream(request, pieces(), "text/event-stream", scenario)
        await self._maybe_stall(scenario)
        return web.json_response(fixture_json(bodies[scenario]))

    def _compat_error(self, flavor: str, status: int, key: str) -> web.Response:
        message = error_message(flavor, status, key)
        headers: dict[str, str] = {}
        body: dict[str, Any]
        if flavor == "mistral":
            body = {
                "object": "error",
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "3280",
            }
        elif flavor == "vllm":
            body = {
                "error": {
                    "message": message,
                    "type": "BadRequestError",
                    "param": None,
                    "code": status,
                }
            }
        else:
            body = {"error": message}
        if status == 429:
            headers["retry-after"] = "2"
            headers["x-ratelimit-remaining-tokens"] = "0"
        return web.json_response(body, status=status, headers=headers)

    # Azure OpenAI

    async def azure(self, request: web.Request) -> web.StreamResponse:
        seen = await self._record(request, "azure")
        body = seen.json()
        deployment = request.match_info.get("deployment") or body["model"]
        scenario = scenario_of(deployment)
        if scenario.startswith("error-"):
            status = int(scenario.removeprefix("error-"))
            return web.json_response(
                {
                    "error": {
                        "message": error_message("Azure", status, AZURE_KEY),
                        "type": "requests",
                        "param": None,
                        "code": "429",
                    }
                },
                status=status,
                headers={
                    "retry-after-ms": "1500",
                    "retry-after": "2",
                    "x-ratelimit-remaining-requests": "0",
                },
            )
        if request.match_info["operation"] == "embeddings":
            return web.json_response(fixture_json(OPENAI_EMBEDDING))
        if body.get("stream"):
            pieces = sse_events(OPENAI_STREAM)
            return await self._stream(request, pieces, "text/event-stream", scenario)
        return web.json_response(fixture_json(OPENAI_BODY))

    async def openai_embeddings(self, request: web.Request) -> web.Response:
        await self._record(request, "mistral")
        return web.json_response(fixture_json(OPENAI_EMBEDDING))

    # Streams

    async def _maybe_stall(self, scenario: str) -> None:
        if scenario == "stall":
            await asyncio.sleep(30)

    async def _stream(
        self,
        request: web.Request,
        pieces: list[bytes],
        content_type: str,
        scenario: str,
        headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        """Write the pieces (SSE events or event-stream frames) the way the
        scenario sets, each split in two writes to test reassembly."""
        await self._maybe_stall(scenario)
        response = web.StreamResponse(
            headers={"Content-Type": content_type, **(headers or {})}
        )
        await response.prepare(request)
        # Where reset, stall-mid and cut break the stream: after at least
        # one piece, and before the last.
        break_at = max(1, len(pieces) // 2)
        if scenario == "cut":
            pieces = pieces[:break_at]
        try:
            for index, piece in enumerate(pieces):
                if scenario == "reset" and index == break_at:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                if scenario == "drip":
                    await asyncio.sleep(DRIP_INTERVAL)
                if scenario == "stall-mid" and index == break_at:
                    await asyncio.sleep(30)
                middle = max(1, len(piece) // 2)
                await response.write(piece[:middle])
                await response.write(piece[middle:])
        except (ConnectionResetError, asyncio.CancelledError):
            self.stream_cancelled.set()
            raise
        await response.write_eof()
        return response
