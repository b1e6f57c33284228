"""The audit trail: every decision and lifecycle event, recorded with why, tamper-evident, queryable.

Turn it on with `engine.audit_to(directory)` (or an `[audit]` table with a
`directory` in the policy); read it with `read`, check it with `verify`.
The format is documented in docs/audit.md.
"""

from charter.audit.reader import DecisionRecord, EventRecord, Record, parse_decision_id, read, read_columns
from charter.audit.settings import AuditSettings
from charter.audit.verify import Problem, VerifyReport, verify
from charter.audit.why import describe
from charter.audit.writer import AuditWriter

__all__ = [
    "AuditSettings",
    "AuditWriter",
    "DecisionRecord",
    "EventRecord",
    "Problem",
    "Record",
    "VerifyReport",
    "describe",
    "parse_decision_id",
    "read",
    "read_columns",
    "verify",
]
