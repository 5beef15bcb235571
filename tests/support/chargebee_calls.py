"""Chargebee SDK calls many API tests share: a call the server must refuse, and an invoice of one charge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chargebee
import pytest


def chargebee_refusal(call: Callable[..., Any], *args: Any, status: int = 400) -> chargebee.APIError:
    """Call `call(*args)`, which the server must refuse with `status`; the SDK's error, to check further."""
    with pytest.raises(chargebee.APIError) as err:
        call(*args)
    assert err.value.http_status_code == status, str(err.value)
    return err.value


def invoice_for_charge(cb: chargebee.Chargebee, customer_id: str, amount: int) -> Any:
    """A closed invoice of one ad hoc charge of `amount` cents in USD."""
    return cb.Invoice.create_for_charge_items_and_charges({
        "customer_id": customer_id, "currency_code": "USD",
        "charges": [{"amount": amount, "description": "Work"}]}).invoice
