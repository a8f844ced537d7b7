"""AWS Bedrock Converse and ConverseStream upstream for OpenAI clients.

Requests go to ``{base_url}/model/{model id}/converse`` (or
``converse-stream``), where ``base_url`` defaults to the Bedrock Runtime
endpoint of the provider's region. They are signed with AWS Signature
Version 4 (service name ``bedrock``) by botocore's ``SigV4Auth``, over the
exact body bytes sent, or carry a Bedrock API key as a bearer token when
the provider has an ``api_key``.

The region and credentials come from the provider's ``region``,
``aws_access_key_id``, ``aws_secret_access_key`` and ``aws_session_token``,
or else from AWS_REGION (or AWS_DEFAULT_REGION), AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, read once at start-up.

NOTE: shared credential files, instance roles and credential refresh are
not supported, so temporary credentials stop working when they expire and
need a restart with new ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

import aiohttp
import orjson
import tiktoken
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from yarl import URL

from llmgw.config import ProviderConfig
from llmgw.errors import UpstreamHTTPError
from llmgw.protocols.bedrock import (
    ConverseStreamTranslator,
    bedrock_error_to_openai,
    bedrock_runtime_url,
    chat_request_to_converse,
    converse_path,
    converse_response_to_chat,
    converse_usage,
)
from llmgw.protocols.eventstream import EventStreamDecoder, EventStreamError
from llmgw.protocols.openai import ChatRequest, Usage, error_event
from llmgw.providers.base import (
    STREAM_ERROR_TYPE,
    ChatExchange,
    StreamTranslator,
    TranslatedResponse,
    TranslatedStream,
    TranslatedUpstreamError,
    TranslatingProvider,
    UpstreamRequest,
    load_object,
    retry_hint_headers,
)

SIGNING_SERVICE: Final = "bedrock"
EVENT_STREAM_TYPE: Final = "application/vnd.amazon.eventstream"
_REQUEST_ID_HEADER: Final = "x-amzn-RequestId"
_ERROR_TYPE_HEADER: Final = "x-amzn-ErrorType"


def _setting(configured: str | None, *variables: str) -> str | None:
    """Return the configured value, else the first environment variable set."""
    if configured:
        return configured
    for variable in variables:
        value = os.environ.get(variable)
        if value:
            return value
    return None


class BedrockProvider(TranslatingProvider):
    def __init__(self, config: ProviderConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(config, session)
        region = _setting(config.region, "AWS_REGION", "AWS_DEFAULT_REGION")
        if region is None:
            raise ValueError(
                f"provider '{config.name}' (kind bedrock) has no AWS region: set"
                " region in the provider, or AWS_REGION"
            )
        self.region = region
        self._base_url = (config.base_url or bedrock_runtime_url(region)).rstrip("/")
        self._bearer = config.api_key.value
        self._credentials = self._load_credentials(config)

    def _load_credentials(self, config: ProviderConfig) -> Credentials | None:
        if self._bearer:
            return None
        access_key = _setting(config.aws_access_key_id, "AWS_ACCESS_KEY_ID")
        secret_key = _setting(
            config.aws_secret_access_key.value, "AWS_SECRET_ACCESS_KEY"
        )
        if access_key is None or secret_key is None:
            raise ValueError(
                f"provider '{config.name}' (kind bedrock) has no AWS credentials:"
                " set aws_access_key_id and aws_secret_access_key (or"
                " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or a Bedrock API"
                " key as api_key"
            )
        token = _setting(config.aws_session_token.value, "AWS_SESSION_TOKEN")
        return Credentials(access_key, secret_key, token)

    def secrets(self) -> tuple[str, ...]:
        found = [self._bearer]
        if self._credentials is not None:
            found += [self._credentials.secret_key, self._credentials.token or ""]
        return tuple(found)

    def signed_request(self, url: str, body: bytes, accept: str) -> UpstreamRequest:
        """Build a request with its credentials: SigV4 headers or the API key."""
        headers = {"Content-Type": "application/json", "Accept": accept}
        if self._credentials is None:
            headers["Authorization"] = f"Bearer {self._bearer}"
            return UpstreamRequest(url=url, headers=headers, body=body)
        # SigV4 hashes the body and signs Host, Content-Type, Accept and
        # X-Amz-Date, so the request must go out with exactly these bytes
        # and headers. aiohttp adds unsigned ones, which AWS ignores.
        signable = AWSRequest(method="POST", url=url, data=body, headers=headers)
        SigV4Auth(self._credentials, SIGNING_SERVICE, self.region).add_auth(signable)
        # The path must go out as signed: a plain string would let yarl
        # decode the %3A in a model id such as "...-v1:0" back to ":".
        return UpstreamRequest(
            url=URL(url, encoded=True),
            headers=dict(signable.headers.items()),
            body=body,
        )

    def chat(
        self, chat: ChatRequest, upstream_model: str, incoming: Mapping[str, str]
    ) -> ChatExchange:
        body = orjson.dumps(
            chat_request_to_converse(chat, upstream_model=upstream_model)
        )
        url = self._base_url + converse_path(upstream_model, stream=chat.stream)
        accept = EVENT_STREAM_TYPE if chat.stream else "application/json"
        request = self.signed_request(url, body, accept)
        return _ConverseExchange(self, request, upstream_model, chat.include_usage)

    def translate_error(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamHTTPError:
        translated = bedrock_error_to_openai(
            status, body, headers.get(_ERROR_TYPE_HEADER)
        )
        return TranslatedUpstreamError(
            provider_status=status,
            client_status=translated.status,
            body=translated.body,
            headers=retry_hint_headers(headers),
        )


def _completion_id(headers: Mapping[str, str]) -> str | None:
    request_id = headers.get(_REQUEST_ID_HEADER)
    return f"chatcmpl-{request_id}" if request_id else None


class _ConverseExchange(ChatExchange):
    stream_content_type = EVENT_STREAM_TYPE

    def __init__(
        self,
        provider: BedrockProvider,
        request: UpstreamRequest,
        upstream_model: str,
        include_usage: bool,
    ) -> None:
        self.provider = provider
        self.request = request
        self.upstream_model = upstream_model
        self.include_usage = include_usage

    def response(self, data: bytes, headers: Mapping[str, str]) -> TranslatedResponse:
        parsed = load_object(data, self.provider)
        body = converse_response_to_chat(
            parsed, model=self.upstream_model, completion_id=_completion_id(headers)
        )
        usage = converse_usage(parsed.get("usage"))
        return TranslatedResponse(body=orjson.dumps(body), usage=usage)

    def stream_translator(
        self, headers: Mapping[str, str], encoding: tiktoken.Encoding
    ) -> StreamTranslator:
        translator = ConverseStreamTranslator(
            model=self.upstream_model,
            include_usage=self.include_usage,
            completion_id=_completion_id(headers),
        )
        return _ConverseStream(translator, encoding)


class _ConverseStream(TranslatedStream):
    """Decode the AWS event stream and translate each message."""

    def __init__(
        self, translator: ConverseStreamTranslator, encoding: tiktoken.Encoding
    ) -> None:
        super().__init__(encoding)
        self._decoder = EventStreamDecoder()
        self._translator = translator

    def _translate(self, data: bytes) -> bytes:
        try:
            messages = self._decoder.feed(data)
        except EventStreamError as exc:
            return self._invalid(exc)
        return b"".join(self._translator.feed_message(m) for m in messages)

    def _finish(self) -> bytes:
        try:
            self._decoder.close()
        except EventStreamError as exc:
            return self._invalid(exc)
        return self._translator.finish()

    def _invalid(self, exc: EventStreamError) -> bytes:
        return error_event(
            f"The upstream sent an invalid event stream: {exc}",
            STREAM_ERROR_TYPE,
            "upstream_invalid_response",
        )

    @property
    def usage(self) -> Usage | None:
        return self._translator.usage
