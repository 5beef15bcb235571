"""Customer operations beyond create/update (billing info, payment method, contacts, billing
date, personal data, excess payments, gateway operations, account hierarchies, merge, move)
and item_price.find_applicable_items / find_applicable_item_prices, through the official
Chargebee SDK (3.29.0) against the live server, each with its effect read back."""

from __future__ import annotations

from typing import Any

import chargebee
import pytest

from tests.api.test_connector import Story, wait_for
from tests.conftest import chargebee_client


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    return chargebee_client(server, tenant["billing_api_key"])


def _refused(call, *args: Any, kind: type[chargebee.APIError] = chargebee.InvalidRequestError) -> chargebee.APIError:
    with pytest.raises(kind) as err:
        call(*args)
    return err.value


def _event_types(cb: chargebee.Chargebee, customer_id: str) -> list[str]:
    return [e.event.event_type for e in cb.Event.list({"limit": 100}).list
            if (e.event.content.get("customer") or {}).get("id") == customer_id]


def _customer(cb: chargebee.Chargebee, customer_id: str, **extra: Any) -> Any:
    return cb.Customer.create({"id": customer_id, "first_name": "Ada", "email": f"{customer_id}@example.com",
                               **extra}).customer


def _catalog(cb: chargebee.Chargebee) -> None:
    cb.ItemFamily.create({"id": "fam", "name": "Family"})
    for item_id, item_type in (("plan", "plan"), ("storage", "addon"), ("seats", "addon"), ("setup", "charge"),
                               ("old", "addon")):
        cb.Item.create({"id": item_id, "name": item_id.title(), "type": item_type, "item_family_id": "fam"})
    cb.ItemPrice.create({"id": "plan-usd", "name": "Plan USD", "item_id": "plan", "price": 1000, "period": 1,
                         "period_unit": "month"})
    for price_id, item_id, extra in (
        ("storage-usd", "storage", {}), ("storage-eur", "storage", {"currency_code": "EUR"}),
        ("storage-usd-yearly", "storage", {"period_unit": "year"}), ("seats-usd", "seats", {}),
        ("old-usd", "old", {}),
    ):
        cb.ItemPrice.create({"id": price_id, "name": price_id, "item_id": item_id, "price": 100, "period": 1,
                             "period_unit": "month", **extra})
    cb.ItemPrice.create({"id": "setup-usd", "name": "Setup", "item_id": "setup", "price": 5000})
    cb.Item.update("old", {"status": "archived"})


# --- billing info, payment method, billing date --------------------------------------------------


def test_update_billing_info_replaces_the_address_and_sets_the_vat_number(cb):
    _customer(cb, "c1", billing_address={"line1": "1 Old Street", "city": "Leeds", "zip": "LS1"})
    customer = cb.Customer.update_billing_info("c1", {
        "billing_address": {"first_name": "Ada", "line1": "2 New Road", "city": "York", "country": "GB"},
        "vat_number": "GB123456789", "registered_for_gst": False}).customer
    address = customer.billing_address
    assert (address.line1, address.city, address.country, address.zip) == ("2 New Road", "York", "GB", None)
    assert (customer.vat_number, customer.registered_for_gst) == ("GB123456789", False)
    again = cb.Customer.retrieve("c1").customer
    assert (again.billing_address.line1, again.vat_number) == ("2 New Road", "GB123456789")
    assert "customer_changed" in _event_types(cb, "c1")


def test_update_billing_info_refuses_e_invoicing_by_name_and_changes_nothing(cb):
    _customer(cb, "c1")
    err = _refused(cb.Customer.update_billing_info, "c1", {"vat_number": "X1", "is_einvoice_enabled": True})
    assert (err.http_status_code, err.param) == (400, "is_einvoice_enabled")
    assert cb.Customer.retrieve("c1").customer.vat_number is None
    assert _refused(cb.Customer.update_billing_info, "nobody", {"vat_number": "X"}).http_status_code == 404


def test_update_payment_method_records_it_without_a_gateway(cb):
    _customer(cb, "c1")
    assert cb.Customer.retrieve("c1").customer.card_status == "no_card"
    customer = cb.Customer.update_payment_method("c1", {"payment_method": {
        "type": "card", "gateway": "stripe", "reference_id": "cus_A/card_B"}}).customer
    method = customer.payment_method
    assert (method.type, method.gateway, method.reference_id, method.status) == (
        "card", "stripe", "cus_A/card_B", "valid")
    assert customer.card_status == "valid"
    direct = cb.Customer.update_payment_method("c1", {"payment_method": {
        "type": "direct_debit", "reference_id": "BA-1"}}).customer.payment_method
    assert (direct.type, direct.gateway) == ("direct_debit", "not_applicable")
    assert cb.Customer.retrieve("c1").customer.card_status == "no_card"
    for params, param in (
        ({"type": "card", "tmp_token": "tok_1"}, "payment_method[tmp_token]"),
        ({"type": "card", "reference_id": "x", "issuing_country": "GB"}, "payment_method[issuing_country]"),
        ({"type": "card"}, "payment_method[reference_id]"),
        ({"type": "free_trial", "reference_id": "x"}, "payment_method[type]"),
    ):
        assert _refused(cb.Customer.update_payment_method, "c1", {"payment_method": params}).param == param
    assert cb.Customer.retrieve("c1").customer.payment_method.reference_id == "BA-1"


def test_change_billing_date_records_the_calendar_preferences(cb):
    _customer(cb, "c1")
    customer = cb.Customer.change_billing_date("c1", {"billing_date": 15, "billing_month": 7,
                                                      "billing_day_of_week": "monday"}).customer
    assert (customer.billing_date, customer.billing_month, customer.billing_date_mode) == (15, 7, "manually_set")
    assert (customer.billing_day_of_week, customer.billing_day_of_week_mode) == ("monday", "manually_set")
    customer = cb.Customer.change_billing_date("c1", {"billing_date_mode": "using_defaults"}).customer
    assert (customer.billing_date, customer.billing_date_mode) == (15, "using_defaults")
    assert _refused(cb.Customer.change_billing_date, "c1", {"billing_date": 32}).param == "billing_date"
    _customer(cb, "c2")
    assert _refused(cb.Customer.change_billing_date, "c2", {"billing_month": 2}).param == "billing_month"
    assert cb.Customer.retrieve("c2").customer.billing_month is None


# --- contacts --------------------------------------------------------------------------------------


def test_contacts_are_added_listed_updated_and_deleted(cb):
    _customer(cb, "c1")
    cb.Customer.add_contact("c1", {"contact": {"id": "ct-bill", "email": "bills@example.com", "label": "billing",
                                               "enabled": True, "send_billing_email": True}})
    customer = cb.Customer.add_contact("c1", {"contact": {"email": "cto@example.com", "first_name": "Lin"}}).customer
    assert [(c.email, c.enabled, c.send_billing_email) for c in customer.contacts] == [
        ("bills@example.com", True, True), ("cto@example.com", False, False)]
    generated = customer.contacts[1].id
    page = cb.Customer.contacts_for_customer("c1", {"limit": 1})
    assert [e.contact.id for e in page.list] == ["ct-bill"] and page.next_offset is not None
    rest = cb.Customer.contacts_for_customer("c1", {"limit": 1, "offset": page.next_offset})
    assert [e.contact.id for e in rest.list] == [generated] and rest.next_offset is None

    updated = cb.Customer.update_contact("c1", {"contact": {"id": generated, "phone": "+44 1", "enabled": True}})
    assert [(c.id, c.phone, c.enabled, c.first_name) for c in updated.customer.contacts][1] == (
        generated, "+44 1", True, "Lin")
    assert _refused(cb.Customer.add_contact, "c1", {"contact": {"id": "ct-bill", "email": "x@example.com"}}
                    ).api_error_code == "duplicate_entry"
    assert _refused(cb.Customer.add_contact, "c1", {"contact": {"first_name": "No email"}}).param == "contact[email]"
    assert _refused(cb.Customer.delete_contact, "c1", {"contact": {"id": "ct-none"}}).http_status_code == 404

    remaining = cb.Customer.delete_contact("c1", {"contact": {"id": "ct-bill"}}).customer.contacts
    assert [c.id for c in remaining] == [generated]
    assert [e.contact.id for e in cb.Customer.contacts_for_customer("c1").list] == [generated]


# --- personal data, deletion -----------------------------------------------------------------------


def _subscribe(cb: chargebee.Chargebee, customer_id: str, subscription_id: str) -> None:
    cb.Subscription.create_with_items(customer_id, {"id": subscription_id,
                                                    "subscription_items": [{"item_price_id": "plan-usd"}]})


def test_clear_personal_data_erases_what_names_the_person(cb):
    _catalog(cb)
    _customer(cb, "c1", last_name="Lovelace", phone="+44 2", company="Engines",
              billing_address={"line1": "12 St James's Square", "city": "London"})
    cb.Customer.add_contact("c1", {"contact": {"email": "ada@example.com"}})
    customer = cb.Customer.clear_personal_data("c1").customer
    assert (customer.pii_cleared, customer.first_name, customer.last_name, customer.email) == (
        "cleared", None, None, None)
    assert (customer.phone, customer.company, customer.billing_address, customer.contacts) == (None,) * 4
    assert cb.Customer.retrieve("c1").customer.pii_cleared == "cleared"

    _customer(cb, "c2")
    _subscribe(cb, "c2", "s2")
    err = _refused(cb.Customer.clear_personal_data, "c2")
    assert (err.http_status_code, err.api_error_code) == (409, "invalid_state_for_request") and "s2" in str(err)
    assert cb.Customer.retrieve("c2").customer.first_name == "Ada"


def test_delete_takes_delete_payment_method(cb):
    _customer(cb, "c1")
    assert cb.Customer.delete("c1", {"delete_payment_method": True}).customer.deleted is True
    _customer(cb, "c2")
    assert _refused(cb.Customer.delete, "c2", {"delete_cards": True}).param == "delete_cards"


# --- payments --------------------------------------------------------------------------------------


def test_record_excess_payment_adds_to_the_customers_balance(cb):
    _customer(cb, "c1")
    answer = cb.Customer.record_excess_payment("c1", {
        "transaction": {"amount": 2500, "payment_method": "bank_transfer", "date": 1767225600,
                        "reference_number": "WIRE-7"}, "comment": "paid ahead"})
    txn = answer.transaction
    assert (txn.amount, txn.currency_code, txn.payment_method, txn.type, txn.status, txn.date) == (
        2500, "USD", "bank_transfer", "payment", "success", 1767225600)
    assert (txn.customer_id, txn.reference_number, txn.amount_unused) == ("c1", "WIRE-7", 2500)
    assert answer.customer.excess_payments == 2500
    cb.Customer.record_excess_payment("c1", {"transaction": {"amount": 500, "payment_method": "cash",
                                                             "date": 1767225600}})
    assert cb.Customer.retrieve("c1").customer.excess_payments == 2500 + 500
    for params, param in (
        ({"amount": 1, "payment_method": "cash", "date": 1767225600, "currency_code": "EUR"},
         "transaction[currency_code]"),
        ({"amount": 0, "payment_method": "cash", "date": 1767225600}, "transaction[amount]"),
        ({"amount": 1, "payment_method": "cash"}, "transaction[date]"),
    ):
        assert _refused(cb.Customer.record_excess_payment, "c1", {"transaction": params}).param == param
    assert cb.Customer.retrieve("c1").customer.excess_payments == 3000


def test_gateway_operations_answer_as_chargebee_does_without_a_gateway(cb):
    _customer(cb, "c1")
    err = _refused(cb.Customer.collect_payment, "c1", {"amount": 1000}, kind=chargebee.PaymentError)
    assert (err.http_status_code, err.api_error_code) == (400, "payment_method_not_present")
    assert "record_payment" in str(err)
    err = _refused(cb.Customer.collect_payment, "c1", {"payment_source_id": "pm_1"}, kind=chargebee.PaymentError)
    assert err.param == "payment_source_id"
    assert _refused(cb.Customer.collect_payment, "c1", {"amount": -1}).param == "amount"
    err = _refused(cb.Customer.send_payment_request, "c1")
    assert (err.api_error_code, "send_payment_request" in str(err)) == ("configuration_incompatible", True)
    err = _refused(cb.Customer.assign_payment_role, "c1", {"payment_source_id": "pm_1", "role": "primary"})
    assert (err.http_status_code, err.param) == (404, "payment_source_id")


# --- account hierarchies ---------------------------------------------------------------------------


def _ids(entries: list[Any]) -> list[str]:
    return [h.customer_id for h in entries]


def test_account_hierarchy_links_reads_and_unlinks(cb):
    for customer_id in ("root", "mid", "leaf", "loner"):
        _customer(cb, customer_id)
    mid = cb.Customer.relationships("mid", {"parent_id": "root", "invoice_owner_id": "root"}).customer
    assert (mid.relationship.parent_id, mid.relationship.invoice_owner_id, mid.relationship.payment_owner_id) == (
        "root", "root", "root")
    assert mid.use_default_hierarchy_settings is True
    leaf = cb.Customer.relationships("leaf", {"parent_id": "mid"}).customer
    assert (leaf.relationship.invoice_owner_id, leaf.relationship.payment_owner_id) == ("leaf", "leaf")
    assert "hierarchy_created" in _event_types(cb, "leaf")

    def listed(params: dict[str, Any]) -> list[str]:
        return sorted(e.customer.id for e in cb.Customer.list({"relationship": params}).list)

    assert listed({"parent_id": {"is": "root"}}) == ["mid"]
    assert listed({"invoice_owner_id": {"is": "root"}}) == ["mid"]
    assert listed({"parent_id": {"is_present": False}}) == ["loner", "root"]

    assert _ids(cb.Customer.hierarchy("leaf", {"hierarchy_operation_type": "path_to_root"}).hierarchies) == [
        "leaf", "mid", "root"]
    down = cb.Customer.hierarchy("root", {"hierarchy_operation_type": "subordinates"}).hierarchies
    assert [(h.customer_id, h.parent_id, h.has_children, h.children_ids) for h in down] == [
        ("root", None, True, ["mid"]), ("mid", "root", True, ["leaf"]), ("leaf", "mid", False, None)]
    assert (down[0].invoice_owner_id, down[1].invoice_owner_id) == ("root", "root")
    assert _ids(cb.Customer.hierarchy("leaf", {"hierarchy_operation_type": "complete_hierarchy"}).hierarchies) == [
        "root", "mid", "leaf"]
    first = cb.Customer.list_hierarchy_detail("mid", {"hierarchy_operation_type": "complete_hierarchy", "limit": 2})
    assert [e.hierarchy.customer_id for e in first.list] == ["root", "mid"] and first.next_offset is not None
    rest = cb.Customer.list_hierarchy_detail("mid", {"hierarchy_operation_type": "complete_hierarchy",
                                                     "limit": 2, "offset": first.next_offset})
    assert [e.hierarchy.customer_id for e in rest.list] == ["leaf"] and rest.next_offset is None

    # A leaf invoiced by the root keeps the middle customer from leaving the hierarchy alone.
    cb.Customer.relationships("leaf", {"invoice_owner_id": "root"})
    err = _refused(cb.Customer.delete_relationship, "mid")
    assert err.http_status_code == 409 and "leaf" in str(err)
    assert _refused(cb.Customer.delete, "root").http_status_code == 409
    unlinked = cb.Customer.delete_relationship("leaf").customer
    assert unlinked.relationship is None and "hierarchy_deleted" in _event_types(cb, "leaf")
    assert cb.Customer.delete_relationship("mid").customer.relationship is None
    assert cb.Customer.hierarchy("root", {"hierarchy_operation_type": "subordinates"}).hierarchies[0].has_children \
        is False


def test_account_hierarchy_refuses_cycles_bad_owners_and_stray_settings(cb):
    for customer_id in ("a", "b", "c", "d"):
        _customer(cb, customer_id)
    cb.Customer.relationships("b", {"parent_id": "a"})
    for customer_id, params, param in (
        ("a", {"parent_id": "b"}, "parent_id"),  # a cycle
        ("a", {"parent_id": "a"}, "parent_id"),
        ("c", {}, "parent_id"),  # outside a hierarchy, a parent is needed
        ("c", {"parent_id": "b", "invoice_owner_id": "d"}, "invoice_owner_id"),  # not an ancestor
        ("c", {"parent_id": "b", "invoice_owner_id": "a", "payment_owner_id": "c"}, "payment_owner_id"),
        ("c", {"parent_id": "b", "parent_account_access": {"send_invoice_emails": True}}, "parent_account_access"),
    ):
        assert _refused(cb.Customer.relationships, customer_id, params).param == param, params
    assert _refused(cb.Customer.relationships, "c", {"parent_id": "nobody"}).http_status_code == 404
    assert cb.Customer.retrieve("c").customer.relationship is None
    assert cb.Customer.retrieve("a").customer.relationship is None

    # The invoice owner pays; a customer invoiced for itself may have an ancestor pay.
    c = cb.Customer.relationships("c", {"parent_id": "b", "payment_owner_id": "a"}).customer
    assert (c.relationship.invoice_owner_id, c.relationship.payment_owner_id) == ("c", "a")
    settings = cb.Customer.update_hierarchy_settings("c", {
        "use_default_hierarchy_settings": False,
        "parent_account_access": {"portal_download_child_invoices": "view_only", "send_invoice_emails": True},
        "child_account_access": {"portal_edit_subscriptions": "view_only"}}).customer
    assert settings.use_default_hierarchy_settings is False
    assert (settings.parent_account_access.portal_download_child_invoices,
            settings.parent_account_access.send_invoice_emails) == ("view_only", True)
    assert settings.child_account_access.portal_edit_subscriptions == "view_only"
    assert _refused(cb.Customer.update_hierarchy_settings, "d", {"use_default_hierarchy_settings": True}
                    ).http_status_code == 409
    assert _refused(cb.Customer.hierarchy, "c", {"hierarchy_operation_type": "everything"}).param == \
        "hierarchy_operation_type"


# --- merge and move --------------------------------------------------------------------------------


def test_merge_moves_invoices_credit_notes_and_balances_to_the_target(cb):
    _customer(cb, "dup")
    _customer(cb, "keep")
    cb.Customer.update_payment_method("dup", {"payment_method": {"type": "card", "reference_id": "card_9"}})
    cb.Customer.record_excess_payment("dup", {"transaction": {"amount": 700, "payment_method": "cash",
                                                              "date": 1767225600}})
    cb.Customer.record_excess_payment("keep", {"transaction": {"amount": 300, "payment_method": "cash",
                                                               "date": 1767225600}})
    invoice = cb.Invoice.create_for_charge_items_and_charges({
        "customer_id": "dup", "currency_code": "USD", "charges": [{"amount": 2000, "description": "Work"}]}).invoice
    note = cb.CreditNote.create({"reference_invoice_id": invoice.id, "type": "adjustment", "total": 500,
                                 "reason_code": "other"}).credit_note

    target = cb.Customer.merge({"from_customer_id": "dup", "to_customer_id": "keep"}).customer
    assert target.id == "keep"
    assert target.excess_payments == 700 + 300
    assert (target.payment_method.type, target.payment_method.reference_id) == ("card", "card_9")
    moved = cb.Invoice.retrieve(invoice.id).invoice
    assert moved.customer_id == "keep" and {line.customer_id for line in moved.line_items} == {"keep"}
    assert [e.invoice.id for e in cb.Invoice.invoices_for_customer("keep").list] == [invoice.id]
    assert cb.Invoice.invoices_for_customer("dup").list == []
    assert cb.CreditNote.retrieve(note.id).credit_note.customer_id == "keep"
    source = cb.Customer.retrieve("dup").customer
    assert (source.deleted, source.excess_payments, source.payment_method) == (False, 0, None)
    # Both excess payments moved with their transactions: applied to the moved invoice (2000 - 500 due).
    applied = cb.Invoice.apply_payments(invoice.id).invoice
    assert (applied.amount_paid, applied.amount_due, len(applied.linked_payments)) == (700 + 300, 1500 - 1000, 2)
    assert cb.Customer.retrieve("keep").customer.excess_payments == 0


def test_merge_refuses_subscriptions_hierarchies_and_itself(cb):
    _catalog(cb)
    for customer_id in ("a", "b", "p"):
        _customer(cb, customer_id)
    invoice = cb.Invoice.create_for_charge_items_and_charges({
        "customer_id": "a", "currency_code": "USD", "charges": [{"amount": 100, "description": "x"}]}).invoice
    _subscribe(cb, "a", "sub-a")
    err = _refused(cb.Customer.merge, {"from_customer_id": "a", "to_customer_id": "b"})
    assert (err.http_status_code, "sub-a" in str(err)) == (409, True)
    assert cb.Invoice.retrieve(invoice.id).invoice.customer_id == "a"
    cb.Customer.relationships("b", {"parent_id": "p"})
    assert _refused(cb.Customer.merge, {"from_customer_id": "p", "to_customer_id": "b"}).http_status_code == 409
    assert _refused(cb.Customer.merge, {"from_customer_id": "b", "to_customer_id": "b"}).param == "to_customer_id"
    assert _refused(cb.Customer.merge, {"from_customer_id": "a", "to_customer_id": "nobody"}).http_status_code == 404


def test_move_between_sites_is_refused_naming_the_site(cb, tenant):
    err = _refused(cb.Customer.move, {"id_at_from_site": "c1", "from_site": "elsewhere"})
    assert (err.http_status_code, err.param, "elsewhere" in str(err)) == (400, "from_site", True)
    assert _refused(cb.Customer.move, {"from_site": "elsewhere"}).param == "id_at_from_site"


# --- applicable items ------------------------------------------------------------------------------


def test_applicable_items_and_item_prices_follow_the_plans_applicability(cb):
    _catalog(cb)
    items = cb.ItemPrice.find_applicable_items("plan-usd", {"sort_by": {"asc": "id"}})
    assert [e.item.id for e in items.list] == ["seats", "storage"]  # active addons: no charge, no archived
    prices = cb.ItemPrice.find_applicable_item_prices("plan-usd", {"sort_by": {"asc": "id"}})
    assert [e.item_price.id for e in prices.list] == ["seats-usd", "storage-usd"]  # USD, monthly
    only = cb.ItemPrice.find_applicable_item_prices("plan-usd", {"item_id": "storage"})
    assert [e.item_price.id for e in only.list] == ["storage-usd"]
    first = cb.ItemPrice.find_applicable_items("plan-usd", {"sort_by": {"desc": "id"}, "limit": 1})
    assert [e.item.id for e in first.list] == ["storage"] and first.next_offset is not None

    cb.Item.update("plan", {"item_applicability": "restricted", "applicable_items": ["seats"]})
    assert [e.item.id for e in cb.ItemPrice.find_applicable_items("plan-usd").list] == ["seats"]
    assert [e.item_price.id for e in cb.ItemPrice.find_applicable_item_prices("plan-usd").list] == ["seats-usd"]

    assert _refused(cb.ItemPrice.find_applicable_items, "storage-usd").param == "item_price_id"
    assert _refused(cb.ItemPrice.find_applicable_items, "nothing").http_status_code == 404
    assert _refused(cb.ItemPrice.find_applicable_items, "plan-usd", {"item_id": "seats"}).param == "item_id"
    assert _refused(cb.ItemPrice.find_applicable_item_prices, "plan-usd", {"sort_by": {"asc": "price"}}
                    ).param == "sort_by[asc]"


# --- through the connector -------------------------------------------------------------------------


def test_the_m3ter_account_follows_billing_info_and_forgets_cleared_personal_data(server, tenant):
    story = Story(server, tenant)
    story.cb.Subscription.create_with_items("cust_1", {"id": "sub_1",
                                                       "subscription_items": [{"item_price_id": "basic-usd"}]})
    wait_for(story.account_plans)

    def account() -> Any:
        (found,) = story.m3.accounts.list(codes=["cust_1"])
        return found

    assert (account().email_address, account().address.locality) == ("ada@example.com", "London")
    story.cb.Customer.update_billing_info("cust_1", {"billing_address": {"line1": "2 New Road", "city": "York"}})
    wait_for(lambda: account().address.locality == "York")
    assert account().address.address_line1 == "2 New Road"

    story.cb.Subscription.cancel_for_items("sub_1", {"cancel_option": "immediately"})
    story.cb.Customer.clear_personal_data("cust_1")
    cleared = wait_for(lambda: (a := account()).email_address == "cust_1@unknown.invalid" and a)
    assert (cleared.name, cleared.address) == ("cust_1", None)
