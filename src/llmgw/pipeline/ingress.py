"""Ingress: read the request body within its size and time limits, parse it."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from llmgw.errors import BodyTooLarge, InvalidRequest, RequestTimeout


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"Request body is larger than the limit of {limit} bytes.")


async def read_body(request: web.Request, max_bytes: int, read_timeout: float) -> bytes:
    """Read the whole body, rejecting it as soon as it passes ``max_bytes``.

    A declared Content-Length over the limit is rejected before any byte is
    read; a chunked body is counted as it arrives.
    """
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes)

    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(read_timeout):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                parts.append(chunk)
    except RequestPayloadError as exc:
        # For example a body sent as Content-Encoding: gzip that is not gzip.
        raise InvalidRequest(f"The request body could not be read: {exc}.") from None
    except TimeoutError:
        raise RequestTimeout(
            f"Timed out after {read_timeout:g} s waiting for the request body."
        ) from None
    return b"".join(parts)


def parse_json(body: bytes) -> object:
    if not body:
        raise InvalidRequest("The request body is empty: send a JSON object.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc}."
        ) from None
