"""A bill's statuses and what may be done to a bill in each: the one place these rules live.

m3ter's bill is PENDING or APPROVED, and an approved bill can be locked (a flag beside the status).
A locked bill is final: nothing but a repeated lock touches it.
"""

from __future__ import annotations

from enum import StrEnum

from meterbill.core.errors import InvalidState


class BillStatus(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"


class BillAction(StrEnum):
    """What can be done to a bill; each value completes "the bill cannot be ..." in a refusal."""

    APPROVE = "approved"
    RETURN_TO_PENDING = "returned to PENDING"
    LOCK = "locked"
    DELETE = "deleted"
    # A bill job re-run over an existing bill: only a PENDING one changes, an approved one is final to it.
    RERATE = "recalculated by a bill job"
    # An explicit recalculation (/billjobs/recalculate): an approved bill goes back to PENDING.
    RECALCULATE = "recalculated"
    # Credit and debit line items.
    EDIT_LINES = "given, changed or cleared of credit and debit line items"


ALLOWED_FROM: dict[BillAction, frozenset[BillStatus]] = {
    BillAction.APPROVE: frozenset({BillStatus.PENDING}),
    BillAction.RETURN_TO_PENDING: frozenset({BillStatus.APPROVED}),
    BillAction.LOCK: frozenset({BillStatus.APPROVED}),
    BillAction.DELETE: frozenset({BillStatus.PENDING}),
    BillAction.RERATE: frozenset({BillStatus.PENDING}),
    BillAction.RECALCULATE: frozenset({BillStatus.PENDING, BillStatus.APPROVED}),
    BillAction.EDIT_LINES: frozenset({BillStatus.PENDING}),
}


# The status an action leads to, where it changes the status: asking for it again is "already" done.
LEADS_TO: dict[BillAction, BillStatus] = {
    BillAction.APPROVE: BillStatus.APPROVED,
    BillAction.RETURN_TO_PENDING: BillStatus.PENDING,
}


def refusal(bill_id: str, status: str, locked: bool, action: BillAction) -> str | None:
    """Why `action` may not be done to this bill, or None when it may."""
    if locked and action is not BillAction.LOCK:
        return f"bill {bill_id} is locked: it cannot be {action.value} (nothing was changed)"
    allowed = ALLOWED_FROM[action]
    if status not in allowed:
        wanted = " or ".join(sorted(allowed))
        already = "already " if LEADS_TO.get(action) == status else ""
        return (f"bill {bill_id} is {already}{status}: only a {wanted} bill can be {action.value} "
                "(nothing was changed)")
    return None


def require(bill_id: str, status: str, locked: bool, action: BillAction, *, param: str | None = None) -> None:
    reason = refusal(bill_id, status, locked, action)
    if reason is not None:
        raise InvalidState(reason, param=param)

