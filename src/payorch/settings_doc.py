"""Every setting in one Markdown table, generated from the ``Settings`` model (README, operations).

    python -m payorch.settings_doc            # print the table
    python -m payorch.settings_doc --write    # refresh it in README.md between the markers

tests/unit/test_settings_doc.py fails when README.md's table is stale, so a new field cannot go
undocumented.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
import textwrap
import types
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from payorch.settings import Settings

START = "<!-- settings-table:start (python -m payorch.settings_doc --write) -->"
END = "<!-- settings-table:end -->"


@cache
def _attribute_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """The string literal written under each field (this codebase's way of documenting fields)."""
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, following in zip(body, [*body[1:], None], strict=True):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is Annotated:
        return _models_in(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _models_in(arg)]
    return []


def _list_item_models(annotation: Any) -> list[type[BaseModel]]:
    """The models a list's items may be: one, or the members of a (discriminated) union."""
    return _models_in(get_args(annotation)[0]) if get_origin(annotation) is list else []


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    models = _list_item_models(annotation)
    return models[0] if len(models) == 1 else None


def _discriminator(annotation: Any) -> str | None:
    """The field a list of a discriminated union picks each item's model by."""
    item = get_args(annotation)[0] if get_origin(annotation) is list else None
    if get_origin(item) is not Annotated:
        return None
    found = (getattr(meta, "discriminator", None) for meta in get_args(item)[1:])
    return next((name for name in found if isinstance(name, str)), None)


def _tag(model: type[BaseModel], discriminator: str) -> str:
    (tag,) = get_args(model.model_fields[discriminator].annotation)
    return str(tag)


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    for noise in ("typing.", "pydantic.types.", "ipaddress.", "pathlib.", "payorch.", "NoneType"):
        text = text.replace(noise, "" if noise != "NoneType" else "None")
    return text.replace("|", "\\|")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        value = [item.model_dump(mode="json", exclude_none=True) for item in value]
    if isinstance(value, dict) and any(isinstance(v, BaseModel) for v in value.values()):
        value = {k: v.model_dump(mode="json", exclude_none=True) for k, v in value.items()}
    if value is None:
        return ""
    rendered = json.dumps(value, default=str) if not isinstance(value, str) or not value else value
    return "`" + rendered.replace("|", "\\|") + "`"


def rows(model: type[BaseModel] = Settings, prefix: str = "PAYORCH_") -> Iterator[tuple[str, str, str, str]]:
    """(variable, type, default, description) for every field, nested sections flattened."""
    docs = _attribute_docstrings(model)
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        description = (field.description or docs.get(name, "")).replace("|", "\\|")
        nested = _models_in(field.annotation)
        item = _list_item_model(field.annotation)
        if nested:
            optional = "(optional section) " if field.default is None else ""
            if optional or description:
                yield variable, "section", "", f"{optional}{description}".strip()
            for section in nested:
                yield from rows(section, f"{variable}__")
        elif item is not None:
            yield variable, f"JSON list of {item.__name__}", _default(field), description
            for key, kind, default, text in _object_rows(item):
                yield f"{variable}[].{key}", kind, default, text
        elif (discriminator := _discriminator(field.annotation)) is not None:
            yield variable, f"JSON list of objects, each by its `{discriminator}`", _default(field), description
            yield from _union_rows(variable, _list_item_models(field.annotation), discriminator)
        else:
            yield variable, _type_name(field.annotation), _default(field), description


def _object_rows(model: type[BaseModel]) -> Iterator[tuple[str, str, str, str]]:
    """(key, type, default, description) of a JSON object's keys."""
    for variable, kind, default, text in rows(model, ""):
        yield variable.lower(), kind, default, text


def _union_rows(
    variable: str, models: list[type[BaseModel]], discriminator: str
) -> Iterator[tuple[str, str, str, str]]:
    """Keys every kind has as ``[].key`` (with each kind's default where they differ), the others as
    ``[discriminator=tag].key``."""
    tags = {model: _tag(model, discriminator) for model in models}
    per_model = {
        model: {key: (kind, default, text) for key, kind, default, text in _object_rows(model)} for model in models
    }
    first = per_model[models[0]]
    choices = " \\| ".join(f"`{tag}`" for tag in tags.values())
    yield f"{variable}[].{discriminator}", choices, "(required)", first[discriminator][2]
    shared = [
        key
        for key, (kind, _, text) in first.items()
        if key != discriminator
        and all(rows_of.get(key, ("", "", ""))[::2] == (kind, text) for rows_of in per_model.values())
    ]
    for key in shared:
        kind, default, text = first[key]
        defaults = {per_model[model][key][1] for model in models}
        if len(defaults) > 1:
            default = ", ".join(f"{tags[model]} {per_model[model][key][1]}" for model in models)
        yield f"{variable}[].{key}", kind, default, text
    for model in models:
        for key, (kind, default, text) in per_model[model].items():
            if key != discriminator and key not in shared:
                yield f"{variable}[{discriminator}={tags[model]}].{key}", kind, default, text


def render() -> str:
    lines = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{v}` | {t} | {d} | {m} |" for v, t, d, m in rows()]
    return "\n".join(lines)


def refresh(readme: Path) -> bool:
    """Rewrite the table between the markers; True when the file changed."""
    text = readme.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    updated = f"{head}{START}\n{render()}\n{END}{tail}"
    if updated != text:
        readme.write_text(updated)
    return updated != text


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        refresh(Path("README.md"))
    else:
        sys.stdout.write(render() + "\n")
