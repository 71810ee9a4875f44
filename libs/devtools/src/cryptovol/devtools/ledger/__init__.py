"""The end-to-end ledger: every record id of ``ticks.raw`` accounted for through
``ticks.features``, ``predictions.log`` and the dead-letter topics."""

from cryptovol.devtools.ledger.accounts import Ledger, LedgerReport, ProductAccount, Record

__all__ = ["Ledger", "LedgerReport", "ProductAccount", "Record"]
