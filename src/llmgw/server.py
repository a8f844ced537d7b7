"""The aiohttp application: routes, the error middleware, start and stop."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import orjson
import structlog
from aiohttp import web

from llmgw import handlers, handlers_anthropic
from llmgw.admin.api import add_admin_routes
from llmgw.admin.store import open_store
from llmgw.config import Config, price_warnings
from llmgw.errors import (
    GatewayError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    UpstreamHTTPError,
)
from llmgw.gateway import Gateway
from llmgw.handlers import GATEWAY, REQUEST_ID
from llmgw.ledger.drain import LedgerDrainer
from llmgw.ledger.sink import open_sink
from llmgw.limits import open_backend
from llmgw.pipeline.authenticate import Authenticator
from llmgw.pipeline.context import new_request_id
from llmgw.pipeline.messages import (
    COUNT_TOKENS_PATH,
    MESSAGES_PATH,
    anthropic_error,
    is_messages_path,
)
from llmgw.pipeline.policy import Router, is_glob
from llmgw.providers import build_providers
from llmgw.tokens import TokenCounter, encoding_name_for

log = structlog.get_logger("llmgw.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    error: GatewayError, *, anthropic: bool = False, request_id: str | None = None
) -> web.Response:
    """Turn a gateway error into an HTTP response; nothing else does.

    ``anthropic`` selects Anthropic's error shape, for the Messages routes,
    whose body carries ``request_id`` as Anthropic's own errors do.
    """
    if anthropic:
        return _anthropic_error_response(error, request_id)
    if isinstance(error, UpstreamHTTPError):
        headers = dict(error.headers)
        headers["Content-Type"] = error.content_type
        return web.Response(
            body=error.body, status=error.upstream_status, headers=headers
        )
    return web.Response(
        body=orjson.dumps(error.openai_body()),
        status=error.http_status,
        headers={**error.headers, "Content-Type": "application/json"},
    )


def _anthropic_error_response(
    error: GatewayError, request_id: str | None
) -> web.Response:
    status, body = anthropic_error(error)
    if request_id is not None:
        body = {**body, "request_id": request_id}
    # Upstream headers may name the upstream's own Content-Type.
    headers = {
        name: value
        for name, value in error.headers.items()
        if name.lower() != "content-type"
    }
    headers["Content-Type"] = "application/json"
    return web.Response(body=orjson.dumps(body), status=status, headers=headers)


# Routes whose handlers write the ledger record and the request log line
# themselves (request_scope); the middleware logs every other request.
_LEDGER_ROUTES = frozenset({"/v1/chat/completions", "/v1/embeddings", MESSAGES_PATH})
_PROBE_ROUTES = frozenset({"/healthz", "/readyz"})


async def _respond(request: web.Request, handler: Handler) -> web.StreamResponse:
    def respond(error: GatewayError) -> web.Response:
        return error_response(
            error,
            anthropic=is_messages_path(request.path),
            request_id=request[REQUEST_ID],
        )

    try:
        return await handler(request)
    except GatewayError as exc:
        return respond(exc)
    except web.HTTPNotFound:
        return respond(NotFound(f"Unknown path: {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed:
        return respond(
            MethodNotAllowed(
                f"Method {request.method} is not allowed on {request.path}."
            )
        )
    except web.HTTPException:
        raise
    except Exception:
        # Logged with its traceback where it happened (request_scope) or here;
        # the client gets no internal detail.
        log.exception("unhandled_error", path=request.path)
        return respond(InternalError("The gateway failed to handle the request."))


@web.middleware
async def error_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Give every request an id, map errors to responses, log other routes."""
    request_id = new_request_id()
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    response = await _respond(request, handler)
    if not response.prepared:
        response.headers["x-request-id"] = request_id
        if is_messages_path(request.path):
            # Where the Anthropic SDK reads the request id from.
            response.headers["request-id"] = request_id
    quiet_probe = request.path in _PROBE_ROUTES and response.status < 400
    if request.path not in _LEDGER_ROUTES and not quiet_probe:
        log.info(
            "request",
            request_id=request_id,
            route=request.path,
            method=request.method,
            status=response.status,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
    return response


class StartupError(Exception):
    """The gateway could not start: a port in use, a ledger sink that fails."""


async def build_gateway(config: Config, session: aiohttp.ClientSession) -> Gateway:
    for warning in price_warnings(config):
        log.warning("model_without_price", message=warning)
    # The JWT verifier is built before anything is opened, because from_config
    # raises ValueError for a key or algorithm it cannot use. Its JWKS fetches
    # use the shared session.
    jwt = None
    if config.auth.jwt is not None:
        # Imported only here: PyJWT and cryptography take about 9 MB.
        from llmgw.pipeline.jwt_auth import JWTAuthenticator

        jwt = JWTAuthenticator.from_config(config.auth.jwt, session)
    backend = await open_backend(config)
    sink = open_sink(config.ledger.sink, table=config.ledger.table)
    store = open_store(config)
    try:
        await sink.open()
        await store.open()
    except BaseException:
        await sink.close()
        await backend.close()
        raise
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    return Gateway(
        config=config,
        auth=Authenticator(config, store, jwt=jwt),
        store=store,
        router=Router(config),
        tokens=TokenCounter(preload=encodings_needed(config)),
        backend=backend,
        sink=sink,
        drainer=LedgerDrainer(backend, sink, consumer=consumer),
        providers=build_providers(config.providers, session),
    )


def encodings_needed(config: Config) -> set[str] | None:
    """Return the encodings the configured models count with; None for all.

    Each encoding takes about 50 MB and a second to load, so a gateway
    loads only those its routes need. A glob route forwards names no one
    listed, which may need any encoding.
    """
    names: set[str] = set()
    for model in config.models:
        if is_glob(model.name) and model.upstream_model is None:
            return None
        upstream = model.upstream_model or model.name
        names.add(encoding_name_for(upstream, model.tokenizer)[0])
    return names


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/v1/chat/completions", handlers.chat_completions)
    app.router.add_post("/v1/embeddings", handlers.embeddings)
    app.router.add_post(MESSAGES_PATH, handlers_anthropic.messages)
    app.router.add_post(COUNT_TOKENS_PATH, handlers_anthropic.count_tokens)
    app.router.add_get("/v1/models", handlers.list_models)
    app.router.add_get("/v1/models/{model:.+}", handlers.retrieve_model)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    add_admin_routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        try:
            gateway = await build_gateway(config, session)
        except BaseException:
            await session.close()
            raise
        app[GATEWAY] = gateway
        gateway.drainer.start()
        gateway.auth.start()
        try:
            yield
        finally:
            # In-flight requests have finished by now; settle what they left,
            # then move every ledger record to the durable sink.
            await gateway.auth.close()
            await gateway.wait_background()
            await gateway.drainer.stop()
            await gateway.backend.close()
            await gateway.store.close()
            await gateway.sink.close()
            await session.close()

    app.cleanup_ctx.append(lifecycle)
    return app


async def _start(config: Config, reuse_port: bool) -> web.AppRunner:
    """Build the app, bind the port and start serving; raise StartupError."""
    # aiohttp (3.14) waits shutdown_timeout for in-flight requests, then
    # fails their body reads and waits as long again before it cancels
    # them: half the configured grace for each step keeps the total.
    runner = web.AppRunner(
        create_app(config),
        handler_cancellation=True,
        shutdown_timeout=config.server.shutdown_timeout / 2,
        access_log=None,
    )
    try:
        await runner.setup()
    except Exception as exc:
        # Any failure here (sink unreachable, bad database) ends the process
        # with one clear line instead of a traceback.
        raise StartupError(f"failed to start: {type(exc).__name__}: {exc}") from exc

    # No shutdown_timeout for the site: the runner's is the grace period.
    site = web.TCPSite(
        runner, config.server.host, config.server.port, reuse_port=reuse_port or None
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        address = f"{config.server.host}:{config.server.port}"
        raise StartupError(
            f"cannot listen on {address}: {exc.strerror or exc}"
        ) from exc
    # The objects made during start-up (modules, token encodings, the
    # config) live as long as the process. Freezing them keeps every later
    # full garbage collection from scanning them again, which shortens its
    # pause of the event loop.
    gc.freeze()
    log.info("listening", address=site.name, config=config.source)
    return runner


async def _stop(runner: web.AppRunner, config: Config) -> None:
    """Stop accepting, let in-flight requests finish, drain the ledger."""
    log.info("stopping", reason="signal")
    gateway = runner.app[GATEWAY]
    gateway.stopping = True
    # End the requests still running half a second before aiohttp would
    # cancel them and close their connections, so each client gets a 503 or
    # an error event and a complete response instead of a cut connection.
    grace = config.server.shutdown_timeout
    asyncio.get_running_loop().call_later(max(0.0, grace - 0.5), gateway.cut_requests)
    await runner.cleanup()
    log.info("stopped")


async def serve(
    config: Config,
    *,
    reuse_port: bool = False,
    stop_requested: Callable[[], bool] = lambda: False,
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully.

    The signal handlers go in first, so a signal during start-up stops the
    gateway as soon as it has started. ``stop_requested`` reports a signal
    that arrived before this coroutine ran.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if stop_requested():
        stop.set()

    runner = await _start(config, reuse_port)
    await stop.wait()
    await _stop(runner, config)
