"""llmgw: an LLM gateway on aiohttp with Redis-backed limits and a usage ledger."""

__version__ = "0.1.0"
