"""Usage records, the durable sinks that store them, and reports."""

from llmgw.ledger.drain import LedgerDrainer
from llmgw.ledger.record import UsageRecord
from llmgw.ledger.report import render
from llmgw.ledger.sink import Sink, TotalsRow, open_sink

__all__ = ["LedgerDrainer", "Sink", "TotalsRow", "UsageRecord", "open_sink", "render"]
