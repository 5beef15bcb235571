"""m3ter's searchQuery syntax, parsed without a database."""

from __future__ import annotations

import pytest

from meterbill.core.errors import InvalidInput
from meterbill.metering.search import Term, parse_query


def test_terms_and_comparators():
    assert parse_query("name~Premium On$currency:USD") == [
        Term("name", "~", "Premium On"), Term("currency", ":", "USD")]
    assert parse_query("startDate>=2023-01-01$endDate<=2023-02-01") == [
        Term("startDate", ">=", "2023-01-01"), Term("endDate", "<=", "2023-02-01")]
    assert parse_query("a>1$b<2") == [Term("a", ">", "1"), Term("b", "<", "2")]
    # Only the first comparator splits: a value may hold any of them.
    assert parse_query("name:a:b>c") == [Term("name", ":", "a:b>c")]
    assert parse_query("ids:x,y") == [Term("ids", ":", "x,y")]


def test_empty_terms_are_skipped():
    assert parse_query("") == []
    assert parse_query("$code:a$$") == [Term("code", ":", "a")]


@pytest.mark.parametrize("bad", ["name", "name:", ":value", "na me:x", "name=x", "1name:x"])
def test_a_term_without_field_comparator_and_value_is_refused(bad):
    with pytest.raises(InvalidInput) as refused:
        parse_query(bad)
    assert refused.value.param == "searchQuery"
