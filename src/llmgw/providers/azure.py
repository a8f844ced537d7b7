"""Azure OpenAI: the OpenAI format at Azure's URLs, with an ``api-key`` header.

The model's ``upstream_model`` is the Azure deployment name. ``url_form``
picks the URL style (see ``llmgw.protocols.azure``): ``deployment`` puts the
deployment in the path and needs ``api_version``, and ``v1`` sends it as the
body's ``model``, which the gateway sets to ``upstream_model`` anyway. Bodies
and responses are OpenAI's, so they are relayed without translation.

NOTE: only API keys are supported. Microsoft Entra ID tokens, which expire
and need refreshing, are not.
"""

from __future__ import annotations

import aiohttp

from llmgw.config import ProviderConfig
from llmgw.protocols.azure import API_KEY_HEADER, deployment_url, v1_url
from llmgw.providers.openai import OpenAIProvider


class AzureOpenAIProvider(OpenAIProvider):
    def __init__(self, config: ProviderConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(config, session)
        self._url_form = config.url_form or "deployment"
        if self._url_form == "deployment" and not config.api_version:
            raise ValueError(
                f"provider '{config.name}' (kind azure-openai) uses deployment URLs,"
                " which need api_version: set it to an Azure OpenAI API version"
                " such as YYYY-MM-DD, or set url_form: v1"
            )
        # Checked here, so a bad endpoint fails at start-up, not per request.
        v1_url(self._base_url, "models")

    def auth_headers(self) -> dict[str, str]:
        if not self._api_key:
            return {}
        return {API_KEY_HEADER: self._api_key}

    def operation_url(self, operation: str, upstream_model: str) -> str:
        api_version = self.config.api_version
        if self._url_form == "v1":
            return v1_url(self._base_url, operation, api_version=api_version)
        assert api_version is not None
        return deployment_url(
            self._base_url, upstream_model, operation, api_version=api_version
        )

    def model_list_request(self) -> tuple[str, dict[str, str]] | None:
        # Azure lists the models it offers, not the resource's deployments,
        # which are the names requests use, so there is nothing to match.
        return None
