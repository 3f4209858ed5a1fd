"""Validate JSON documents against Amazon's own models and feed schemas.

    validate_definition("orders_2026-01-01.json", "SearchOrdersResponse", doc)
    validate_feed_schema("listings-feed-processing-report-schema-v2.json", doc)

Both raise `jsonschema.ValidationError` on a mismatch. The models are the project's own copy of
Amazon's (`vendor/amazon/`, Apache-2.0, see its README for the source commit);
`BRIDGE_AMAZON_MODELS` (an `amazon` folder of the same layout) overrides it.
"""
from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

import jsonschema

# jsonschema checks "date-time" only when rfc3339-validator is installed; check it ourselves.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$",
                      re.IGNORECASE)
VENDORED = Path(__file__).resolve().parents[1] / "vendor" / "amazon"
FORMATS = jsonschema.FormatChecker()
FORMATS.checkers["date-time"] = (lambda value: not isinstance(value, str)
                                 or bool(_RFC3339.match(value)), ())


def amazon_dir() -> Path:
    """The vendored `vendor/amazon` folder, or $BRIDGE_AMAZON_MODELS."""
    override = os.environ.get("BRIDGE_AMAZON_MODELS")
    return Path(override) if override else VENDORED


@functools.cache
def load_model(model: str) -> dict:
    return json.loads((amazon_dir() / "models" / model).read_text(encoding="utf-8"))


@functools.cache
def _definition_validator(model: str, definition: str):
    definitions = load_model(model)["definitions"]
    if definition not in definitions:
        raise KeyError(f"{model} has no definition {definition!r}")
    schema = {"$ref": f"#/definitions/{definition}", "definitions": definitions}
    cls = jsonschema.Draft4Validator     # Swagger 2.0 schemas are draft-4 based
    return cls(schema, format_checker=FORMATS)


def validate_definition(model: str, definition: str, doc) -> None:
    """Validate `doc` against `definitions[definition]` of a Swagger model file."""
    _definition_validator(model, definition).validate(doc)


@functools.cache
def _schema_validator(schema_file: str):
    schema = json.loads((amazon_dir() / "schemas" / "feeds" / schema_file).read_text("utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=FORMATS)


def validate_feed_schema(schema_file: str, doc) -> None:
    """Validate `doc` against a JSON Schema file in `schemas/feeds/`."""
    _schema_validator(schema_file).validate(doc)


def response_examples(model: str, operation_id: str) -> list[tuple[str, str, object]]:
    """Amazon's examples for an operation: (status, definition name, example) triples, from
    `examples` and `x-amzn-api-sandbox` static responses."""
    found = []
    for methods in load_model(model)["paths"].values():
        for operation in methods.values():
            if not isinstance(operation, dict) or operation.get("operationId") != operation_id:
                continue
            for status, response in operation["responses"].items():
                ref = (response.get("schema") or {}).get("$ref", "")
                if not ref:
                    continue
                name = ref.rsplit("/", 1)[-1]
                example = (response.get("examples") or {}).get("application/json")
                if example is not None:
                    found.append((status, name, example))
                sandbox = response.get("x-amzn-api-sandbox") or {}
                for case in sandbox.get("static", []) + sandbox.get("dynamic", []):
                    if "response" in case:
                        found.append((status, name, case["response"]))
    return found
