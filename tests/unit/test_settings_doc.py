"""README.md's settings table is the one the Settings model generates, and it names every field."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from payorch import settings_doc
from payorch.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _leaves(model: type[BaseModel], prefix: str = "PAYORCH_") -> set[frozenset[str]]:
    """Every field, as the names it may be listed under (a key of one kind's objects is listed once
    for all kinds, or for its kind alone)."""
    names: set[frozenset[str]] = set()
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        nested = settings_doc._models_in(field.annotation)
        items = settings_doc._list_item_models(field.annotation)
        key = settings_doc._discriminator(field.annotation)
        if nested:
            for section in nested:
                names |= _leaves(section, f"{variable}__")
        elif items:
            names.add(frozenset({variable}))
            for item in items:
                kind = f"[{key}={settings_doc._tag(item, key)}]" if key else "[]"
                names |= {frozenset({f"{variable}[].{sub}", f"{variable}{kind}.{sub}"}) for sub in item.model_fields}
        else:
            names.add(frozenset({variable}))
    return names


def test_readme_table_is_current() -> None:
    text = README.read_text()
    table = text.split(settings_doc.START, 1)[1].split(settings_doc.END, 1)[0].strip()
    assert table == settings_doc.render(), "run: python -m payorch.settings_doc --write"


def test_the_table_lists_every_field() -> None:
    listed = {line.split("`")[1] for line in settings_doc.render().splitlines()[2:]}
    missing = [names for names in _leaves(Settings) if not names & listed]
    assert not missing
    for top_level in Settings.model_fields:
        assert any(
            v == f"PAYORCH_{top_level.upper()}" or v.startswith(f"PAYORCH_{top_level.upper()}__") for v in listed
        )
    assert "PAYORCH_REDIS_CLUSTER" in listed
    assert "PAYORCH_RATELIMIT__TRUSTED_PROXIES" in listed
    assert "PAYORCH_GATEWAYS[].timeout_ms" in listed
    assert "PAYORCH_GATEWAYS[kind=braintree].private_key" in listed
