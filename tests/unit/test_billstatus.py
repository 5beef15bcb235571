"""A bill's status rules: which action each status and the lock allow, and what a refusal says."""

from __future__ import annotations

import pytest

from meterbill.core.errors import InvalidState
from meterbill.metering.billstatus import ALLOWED_FROM, BillAction, BillStatus, refusal, require

PENDING, APPROVED = BillStatus.PENDING, BillStatus.APPROVED

# Every (action, status) pair, and whether an unlocked bill allows it.
EXPECTED = {
    (BillAction.APPROVE, PENDING): True, (BillAction.APPROVE, APPROVED): False,
    (BillAction.RETURN_TO_PENDING, PENDING): False, (BillAction.RETURN_TO_PENDING, APPROVED): True,
    (BillAction.LOCK, PENDING): False, (BillAction.LOCK, APPROVED): True,
    (BillAction.DELETE, PENDING): True, (BillAction.DELETE, APPROVED): False,
    (BillAction.RERATE, PENDING): True, (BillAction.RERATE, APPROVED): False,
    (BillAction.RECALCULATE, PENDING): True, (BillAction.RECALCULATE, APPROVED): True,
    (BillAction.EDIT_LINES, PENDING): True, (BillAction.EDIT_LINES, APPROVED): False,
}


def test_every_action_has_its_rule() -> None:
    assert set(ALLOWED_FROM) == set(BillAction)
    assert {action for action, _ in EXPECTED} == set(BillAction)


@pytest.mark.parametrize(("action", "status"), sorted(EXPECTED))
def test_unlocked_bill(action: BillAction, status: BillStatus) -> None:
    reason = refusal("b1", status, False, action)
    assert (reason is None) == EXPECTED[action, status]
    if reason is not None:
        assert "b1" in reason and status in reason and "nothing was changed" in reason


@pytest.mark.parametrize("action", sorted(BillAction))
def test_a_locked_bill_takes_nothing_but_a_repeated_lock(action: BillAction) -> None:
    reason = refusal("b1", APPROVED, True, action)
    if action is BillAction.LOCK:
        assert reason is None
    else:
        assert reason is not None and "b1 is locked" in reason


def test_require_raises_invalid_state_naming_the_bill_and_the_param() -> None:
    with pytest.raises(InvalidState) as refused:
        require("b9", APPROVED, False, BillAction.EDIT_LINES, param="billId")
    assert refused.value.param == "billId"
    assert refused.value.message.startswith("bill b9 is APPROVED: only a PENDING bill can be given")
