"""Azure OpenAI request URLs, headers and bodies.

Azure OpenAI serves the OpenAI API in two URL forms:

* Deployment-based: ``{endpoint}/openai/deployments/{deployment}/{operation}
  ?api-version=YYYY-MM-DD[-preview]``. The deployment in the path selects the
  model, and Azure ignores the body's ``model``, so the body goes as sent.
* v1: ``{endpoint}/openai/v1/{operation}``, where the body's ``model`` must
  be the deployment name, so it is replaced. ``api-version`` is optional.

Both take the key in an ``api-key`` header, or a Microsoft Entra ID token as
``Authorization: Bearer``. Everything else about the body and the responses
is the OpenAI format. The deployment paths and headers match what the
openai-python SDK's ``AzureOpenAI`` client sends (``openai/lib/azure.py``).
"""

from __future__ import annotations

from typing import Any, Final, Literal
from urllib.parse import quote, urlencode, urlsplit

API_KEY_HEADER: Final = "api-key"

# Operations served under a deployment in the deployment-based form. The
# others (files, batches, models and the rest) are under /openai/ directly.
DEPLOYMENT_OPERATIONS: Final = frozenset(
    {
        "chat/completions",
        "completions",
        "embeddings",
        "audio/transcriptions",
        "audio/translations",
        "audio/speech",
        "images/generations",
        "images/edits",
    }
)

UrlForm = Literal["deployment", "v1"]


def deployment_url(
    endpoint: str, deployment: str, operation: str, *, api_version: str
) -> str:
    """Return the deployment-based URL, such as that of chat completions.

    ``endpoint`` is the resource URL (``https://{resource}.openai.azure.com``)
    and ``operation`` one of ``DEPLOYMENT_OPERATIONS``. Raises ValueError for
    an invalid endpoint, an empty deployment or API version, or another
    operation.
    """
    if operation not in DEPLOYMENT_OPERATIONS:
        raise ValueError(
            f"operation {operation!r} is not served per deployment: expected one of"
            f" {', '.join(sorted(DEPLOYMENT_OPERATIONS))}"
        )
    if not deployment:
        raise ValueError("Azure OpenAI deployment name is empty")
    if not api_version:
        raise ValueError("Azure OpenAI api-version is empty")

    base = _base(endpoint)
    query = urlencode({"api-version": api_version})
    return f"{base}/openai/deployments/{quote(deployment, safe='')}/{operation}?{query}"


def v1_url(endpoint: str, operation: str, *, api_version: str | None = None) -> str:
    """Return the v1 URL, such as ``{endpoint}/openai/v1/chat/completions``.

    ``api_version`` is added as a query parameter when given.
    """
    operation = operation.strip("/")
    if not operation:
        raise ValueError("Azure OpenAI operation is empty")

    url = f"{_base(endpoint)}/openai/v1/{operation}"
    if api_version:
        url += "?" + urlencode({"api-version": api_version})
    return url


def auth_headers(
    *, api_key: str | None = None, entra_token: str | None = None
) -> dict[str, str]:
    """Return the credential header: ``api-key``, or a bearer Entra ID token.

    Raises ValueError unless exactly one of the two is given.
    """
    if bool(api_key) == bool(entra_token):
        raise ValueError("give exactly one of an Azure OpenAI API key and a token")
    if api_key:
        return {API_KEY_HEADER: api_key}
    return {"Authorization": f"Bearer {entra_token}"}


def prepare_body(
    body: dict[str, Any], *, deployment: str, url_form: UrlForm
) -> dict[str, Any]:
    """Return the request body for Azure, the client's body left unchanged.

    The v1 form routes by ``model``, which becomes the deployment name. The
    deployment-based form routes by the path and ignores ``model``, so the
    body is returned as it is.
    """
    if url_form == "v1":
        return {**body, "model": deployment}
    return body


def _base(endpoint: str) -> str:
    """Check the resource endpoint and strip what the URL builders add."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(
            f"invalid Azure OpenAI endpoint {endpoint!r}: expected a URL such as"
            " https://my-resource.openai.azure.com"
        )
    if parts.query or parts.fragment:
        raise ValueError(
            f"invalid Azure OpenAI endpoint {endpoint!r}: remove the query and fragment"
        )

    base = endpoint.rstrip("/")
    # An endpoint copied with its API prefix still works.
    for suffix in ("/openai/v1", "/openai"):
        if base.endswith(suffix):
            return base.removesuffix(suffix)
    return base
