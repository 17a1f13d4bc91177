"""The inventory's structure, checked against the JSON Schema that ships with the package
(``orchestrator/schema/inventory.schema.json``, also printed by ``orchestrator inventory schema``):
every structural problem, each with its key path and a fix said the way a person needs it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs

from orchestrator.inventory.problems import KeyPath, Problems


@cache
def inventory_schema() -> dict[str, Any]:
    text = resources.files("orchestrator").joinpath("schema/inventory.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _schema_at(schema: Mapping[str, Any], path: Iterable[Any]) -> Mapping[str, Any]:
    node: Mapping[str, Any] = schema
    for part in path:
        if "properties" not in node and isinstance(node.get("else"), dict):
            node = node["else"]  # a string-or-mapping value (a host's power:): the mapping's form
        if isinstance(node.get("properties"), dict) and part in node["properties"]:
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif isinstance(node.get("items"), dict):
            node = node["items"]
        else:
            return {}
    mapping_form = node.get("else")
    if "properties" not in node and isinstance(mapping_form, dict) and isinstance(mapping_form.get("properties"), dict):
        return mapping_form
    return node


# What each pattern of the schema means, said the way a person fixing the file needs it.
_PATTERN_HINTS: Mapping[str, str] = {
    "^[a-z0-9][a-z0-9-]*$": "names use lowercase letters, digits and '-', starting with a letter or digit",
    "^[A-Za-z_][A-Za-z0-9_]*$": "letters, digits and '_', not starting with a digit",
}


@cache
def _validator() -> jsonschema_rs.Validator:
    """The one schema validator (jsonschema-rs: ECMA-262 patterns as the JSON Schema spec says, so
    '$' never matches before a final newline; a 5,000-host inventory in a few milliseconds)."""
    return jsonschema_rs.validator_for(inventory_schema())


def check_schema(data: Any, problems: Problems) -> None:
    """Every structural problem, each with its key path."""
    validator = _validator()
    try:
        if validator.is_valid(data):
            return
        errors = list(validator.iter_errors(data))
    except ValueError as exc:  # a value JSON cannot hold; the YAML layer refuses those first
        problems.add((), f"the inventory holds a value that is not plain data ({exc})",
                     "write text, numbers, lists and mappings only")
        return
    schema = inventory_schema()
    for err in sorted(errors, key=lambda e: [str(p) for p in e.instance_path]):
        path: KeyPath = tuple(err.instance_path)
        explain = _EXPLAIN.get(err.kind.name, _other)
        for where, message, hint in explain(err, path, schema):
            problems.add(where, message, hint)


# How each kind of schema error is said: (key path, what is wrong, how to fix it), one or more.
_Explained = list[tuple[KeyPath, str, str]]
_SECRET_KEYS = ("password", "secret", "private_key", "token")


def _unknown_keys(err: jsonschema_rs.ValidationError, path: KeyPath, schema: Mapping[str, Any]) -> _Explained:
    if not isinstance(err.instance, dict):
        return _other(err, path, schema)
    allowed = sorted(_schema_at(schema, path).get("properties", {}))
    out: _Explained = []
    for extra in sorted(str(x) for x in err.kind.value):
        hint = f"remove it or correct its spelling; allowed keys here: {', '.join(allowed)}"
        if extra in _SECRET_KEYS:
            hint = ("secrets never go in the inventory: reference them with password_env "
                    "(an environment variable) or key_file")
        out.append(((*path, extra), f"unknown key '{extra}'", hint))
    return out


def _required(err: jsonschema_rs.ValidationError, path: KeyPath, schema: Mapping[str, Any]) -> _Explained:
    value = err.kind.value
    return [(path, f"missing required key '{value}'", f"add '{value}:' here")]


def _bad_name(err: jsonschema_rs.ValidationError, path: KeyPath, schema: Mapping[str, Any]) -> _Explained:
    bad = getattr(err.kind.value, "instance", err.kind.value)
    pattern = _schema_at(schema, path).get("propertyNames", {}).get("pattern", "")
    return [((*path, str(bad)), f"name {bad!r} is not allowed", _PATTERN_HINTS.get(pattern, f"names match {pattern}"))]


def _enum(err: jsonschema_rs.ValidationError, path: KeyPath, schema: Mapping[str, Any]) -> _Explained:
    allowed_values = ", ".join(str(v) for v in err.kind.value)
    return [(path, f"{err.instance!r} is not one of the allowed values", f"use one of: {allowed_values}")]


def _const(err: jsonschema_rs.ValidationError, path: KeyPath, schema: Mapping[str, Any]) -> _Explained:
    value = err.kind.value
    return [(path, f"must be {value!r}, found {err.instance!r}", f"set it to {value!r}")]


def _type(err: jsonschema_rs.ValidationError, path: KeyPath, schema: Mapping[str, Any]) -> _Explained:
    value = err.kind.value
    wanted = " or ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return [(path, f"expected {wanted}, found {type(err.instance).__name__} {err.instance!r}",
             f"write {'an' if wanted[:1] in 'aeiou' else 'a'} {wanted} here")]


def _pattern(err: jsonschema_rs.ValidationError, path: KeyPath, schema: Mapping[str, Any]) -> _Explained:
    value = err.kind.value
    hint = _PATTERN_HINTS.get(str(value)) or _schema_at(schema, path).get("description") or f"match {value}"
    return [(path, f"{err.instance!r} does not match the expected form", hint)]


def _unique(err: jsonschema_rs.ValidationError, path: KeyPath, schema: Mapping[str, Any]) -> _Explained:
    return [(path, "lists the same entry twice", "remove the repeated entry")]


def _other(err: jsonschema_rs.ValidationError, path: KeyPath, schema: Mapping[str, Any]) -> _Explained:
    hint = _schema_at(schema, path).get("description") or "see `orchestrator inventory schema` for the format"
    return [(path, err.message, hint)]


_EXPLAIN: Mapping[str, Callable[[jsonschema_rs.ValidationError, KeyPath, Mapping[str, Any]], _Explained]] = {
    "additionalProperties": _unknown_keys,
    "required": _required,
    "propertyNames": _bad_name,
    "enum": _enum,
    "const": _const,
    "type": _type,
    "pattern": _pattern,
    "uniqueItems": _unique,
}
