"""README.md's settings table is the one the Settings model generates, and it names every field."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from payorch import settings_doc
from payorch.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _leaves(model: type[BaseModel], prefix: str = "PAYORCH_") -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        nested = settings_doc._models_in(field.annotation)
        item = settings_doc._list_item_model(field.annotation)
        if nested:
            for section in nested:
                names |= _leaves(section, f"{variable}__")
        elif item is not None:
            names.add(variable)
            names |= {f"{variable}[].{sub}" for sub in item.model_fields}
        else:
            names.add(variable)
    return names


def test_readme_table_is_current() -> None:
    text = README.read_text()
    table = text.split(settings_doc.START, 1)[1].split(settings_doc.END, 1)[0].strip()
    assert table == settings_doc.render(), "run: python -m payorch.settings_doc --write"


def test_the_table_lists_every_field() -> None:
    listed = {line.split("`")[1] for line in settings_doc.render().splitlines()[2:]}
    missing = _leaves(Settings) - listed
    assert not missing
    for top_level in Settings.model_fields:
        assert any(
            v == f"PAYORCH_{top_level.upper()}" or v.startswith(f"PAYORCH_{top_level.upper()}__") for v in listed
        )
    assert "PAYORCH_REDIS_CLUSTER" in listed
    assert "PAYORCH_RATELIMIT__TRUSTED_PROXIES" in listed
    assert "PAYORCH_GATEWAYS[].timeout_ms" in listed
