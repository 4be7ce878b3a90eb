"""The one SQL mechanism: named, typed parameters compiled once to asyncpg's positional form."""

from __future__ import annotations

import pytest

from payorch.storage.sql import Statement, StatementError


def test_names_become_positions_in_order_of_first_use() -> None:
    statement = Statement(
        "SELECT * FROM charges WHERE merchant_id = :merchant_id::text AND id = :id::text AND (:id::text IS NOT NULL)"
    )
    assert statement.text == (
        "SELECT * FROM charges WHERE merchant_id = $1::text AND id = $2::text AND ($2::text IS NOT NULL)"
    )
    assert statement.names == ("merchant_id", "id")
    assert statement.args({"id": "ch_1", "merchant_id": "mer_1"}) == ["mer_1", "ch_1"]


def test_casts_literals_identifiers_and_comments_are_left_alone() -> None:
    statement = Statement(
        "SELECT ':not_a_param'::text, \"odd:name\", now()::date -- :nor_this\n"
        "/* :nor::this */ FROM t WHERE a = :a::integer[]"
    )
    assert statement.names == ("a",)
    assert "':not_a_param'::text" in statement.text
    assert "now()::date" in statement.text
    assert statement.text.endswith("a = $1::integer[]")


def test_a_parameter_without_a_type_is_refused_when_written() -> None:
    with pytest.raises(StatementError, match=r":amount::<type>"):
        Statement("UPDATE charges SET amount = :amount WHERE id = :id::text")


@pytest.mark.parametrize(
    ("params", "message"),
    [({"id": "ch_1"}, r"missing \['merchant_id'\]"), ({"id": "a", "merchant_id": "b", "x": 1}, r"unexpected \['x'\]")],
)
def test_every_name_and_only_those_must_be_bound(params: dict[str, object], message: str) -> None:
    statement = Statement("SELECT 1 WHERE :merchant_id::text = :id::text")
    with pytest.raises(StatementError, match=message):
        statement.args(params)
