"""JSON Schema rewritten into the OpenAPI subset that Gemini accepts.

Gemini's function declarations (``parameters``) and ``responseSchema`` take a
``Schema`` object, a subset of OpenAPI 3.0, and reject requests whose schemas
use JSON Schema keywords outside it. ``gemini_schema`` rewrites what it can
and drops the rest.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from llmgw.errors import InvalidRequest

# Fields of Gemini's Schema object that are copied as they are. Type, enum,
# format, description and the fields whose values are schemas are handled
# separately. "title" is dropped on purpose, because it only documents.
_SCHEMA_SCALAR_KEYS: Final = frozenset(
    {
        "nullable",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "minProperties",
        "maxProperties",
        "example",
        "default",
        "propertyOrdering",
    }
)
# Formats Gemini accepts for each type. Any other moves into the description.
_SCHEMA_FORMATS: Final = {
    "string": frozenset({"enum", "date-time"}),
    "number": frozenset({"float", "double"}),
    "integer": frozenset({"int32", "int64"}),
}
# The maximum depth of expanded "$ref"s, where a recursive type is cut off.
MAX_SCHEMA_REF_DEPTH: Final = 8


def gemini_schema(schema: dict[str, Any], param: str) -> dict[str, Any]:
    """Rewrite a JSON Schema into the OpenAPI subset Gemini accepts.

    ``param`` names the schema's place in the request for error messages.

    * ``$ref`` to ``$defs`` or ``definitions`` is expanded in place, at most
      ``MAX_SCHEMA_REF_DEPTH`` levels deep. A recursive reference past that
      depth becomes a bare ``{"type": "object"}``.
    * ``allOf`` is merged into one schema, and ``oneOf`` becomes ``anyOf``.
    * A ``"null"`` type, or ``anyOf`` branch, becomes ``nullable: true``.
    * ``const`` becomes a one-value ``enum``. Gemini's ``enum`` takes strings
      only, so an enum of other values is dropped and listed in the
      description instead, as is an unsupported ``format``.
    * ``required`` keeps only names that ``properties`` defines.
    * Everything else Gemini rejects is dropped: ``additionalProperties``,
      ``$schema``, ``$id``, ``title``, ``examples``, ``exclusiveMinimum``,
      ``exclusiveMaximum``, ``not``, ``if``/``then``/``else``,
      ``patternProperties``, tuple ``items`` and the rest.

    NOTE: a schema with no type and no ``anyOf`` (JSON Schema's "any
    value") is sent without a type. Gemini documents the type as required,
    so such a schema may be rejected.
    """
    definitions: dict[str, Any] = {}
    for key in ("definitions", "$defs"):
        value = schema.get(key)
        if isinstance(value, dict):
            definitions.update(value)
    return _SchemaCleaner(definitions, param).clean(schema, ())


class _SchemaCleaner:
    def __init__(self, definitions: dict[str, Any], param: str) -> None:
        self._definitions = definitions
        self._param = param

    def clean(self, node: object, refs: tuple[str, ...]) -> dict[str, Any]:
        """Clean one schema, below the expanded definitions ``refs``."""
        if not isinstance(node, dict):
            return {}
        expanded = self._expand(node, refs)
        if expanded is None:
            return {"type": "object"}
        node, refs = expanded
        node = self._merge_all_of(node)

        result: dict[str, Any] = {}
        notes: list[str] = []
        self._apply_type(node, result)
        self._apply_any_of(node, result, refs)
        self._apply_enum(node, result, notes)
        self._apply_format(node, result, notes)
        for key in _SCHEMA_SCALAR_KEYS:
            if key in node and key not in result:
                result[key] = node[key]

        properties = node.get("properties")
        if isinstance(properties, dict):
            result["properties"] = {
                name: self.clean(value, refs) for name, value in properties.items()
            }
            required = node.get("required")
            if isinstance(required, list):
                names = [name for name in required if name in result["properties"]]
                if names:
                    result["required"] = names
        items = node.get("items")
        if isinstance(items, dict):
            result["items"] = self.clean(items, refs)

        description = node.get("description")
        if isinstance(description, str) and description:
            notes.insert(0, description)
        if notes:
            result["description"] = " ".join(notes)
        return result

    def _expand(
        self, node: dict[str, Any], refs: tuple[str, ...]
    ) -> tuple[dict[str, Any], tuple[str, ...]] | None:
        """Replace a ``$ref`` by its definition, or return None to cut it off."""
        while isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            name = _definition_name(ref)
            if name is None or name not in self._definitions:
                raise InvalidRequest(
                    f"unsupported JSON Schema reference {ref!r} in '{self._param}':"
                    " only references to '#/$defs/...' or '#/definitions/...' can"
                    " be sent to Gemini",
                    param=self._param,
                )
            if name in refs or len(refs) >= MAX_SCHEMA_REF_DEPTH:
                return None
            target = self._definitions[name]
            siblings = {key: value for key, value in node.items() if key != "$ref"}
            node = {**(target if isinstance(target, dict) else {}), **siblings}
            refs = (*refs, name)
        return node, refs

    @staticmethod
    def _merge_all_of(node: dict[str, Any]) -> dict[str, Any]:
        all_of = node.get("allOf")
        if not isinstance(all_of, list):
            return node

        merged = {key: value for key, value in node.items() if key != "allOf"}
        for part in all_of:
            if not isinstance(part, dict):
                continue
            for key, value in part.items():
                if key == "properties" and isinstance(value, dict):
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged

    @staticmethod
    def _apply_type(node: dict[str, Any], result: dict[str, Any]) -> None:
        node_type = node.get("type")
        if isinstance(node_type, str):
            if node_type == "null":
                result["nullable"] = True
            else:
                result["type"] = node_type
            return
        if not isinstance(node_type, list):
            return

        types = [item for item in node_type if isinstance(item, str) and item != "null"]
        if "null" in node_type:
            result["nullable"] = True
        if len(types) == 1:
            result["type"] = types[0]
        elif types:
            result["anyOf"] = [{"type": item} for item in types]

    def _apply_any_of(
        self, node: dict[str, Any], result: dict[str, Any], refs: tuple[str, ...]
    ) -> None:
        branches = node.get("anyOf", node.get("oneOf"))
        if not isinstance(branches, list):
            return

        cleaned: list[dict[str, Any]] = []
        for branch in branches:
            if isinstance(branch, dict) and branch.get("type") == "null":
                result["nullable"] = True
            else:
                cleaned.append(self.clean(branch, refs))
        if len(cleaned) == 1:
            # A single branch left (typically "X or null") is X itself.
            for key, value in cleaned[0].items():
                result.setdefault(key, value)
        elif cleaned:
            result["anyOf"] = cleaned

    @staticmethod
    def _apply_enum(
        node: dict[str, Any], result: dict[str, Any], notes: list[str]
    ) -> None:
        values = node.get("enum")
        if "const" in node and not isinstance(values, list):
            values = [node["const"]]
        if not isinstance(values, list):
            return

        if None in values:
            result["nullable"] = True
            values = [value for value in values if value is not None]
        if values and all(isinstance(value, str) for value in values):
            result["enum"] = values
            result.setdefault("type", "string")
        elif values:
            allowed = ", ".join(orjson.dumps(value).decode() for value in values)
            notes.append(f"Allowed values: {allowed}.")

    @staticmethod
    def _apply_format(
        node: dict[str, Any], result: dict[str, Any], notes: list[str]
    ) -> None:
        value = node.get("format")
        if not isinstance(value, str):
            return
        if value in _SCHEMA_FORMATS.get(str(result.get("type")), frozenset()):
            result["format"] = value
        else:
            notes.append(f"Format: {value}.")


def _definition_name(ref: str) -> str | None:
    for prefix in ("#/$defs/", "#/definitions/"):
        if ref.startswith(prefix) and "/" not in ref[len(prefix) :]:
            return ref[len(prefix) :]
    return None
