"""machina.manifests.schemacheck: a manifest's schemas checked against the metaschema once per content, and
the digests a worker hands its job children so they do not check the same schemas again."""

from __future__ import annotations

import pytest
from jsonschema import SchemaError

from machina.audit.canonical import digest
from machina.engine import Catalog
from machina.manifests import schemacheck

BROKEN = {"type": "object", "properties": {"n": {"type": 5}}}  # 5 is not a type name


def test_an_invalid_schema_is_refused_every_time_and_never_remembered() -> None:
    for _ in range(2):
        with pytest.raises(SchemaError):
            schemacheck.check_schema(BROKEN)
    assert digest(BROKEN) not in schemacheck.checked_digests()


def test_a_valid_schema_is_remembered_by_its_content() -> None:
    schema = {"type": "object", "properties": {"remembered": {"type": "string"}}, "required": ["remembered"]}
    schemacheck.check_schema(schema)
    assert digest(schema) in schemacheck.checked_digests()
    # The same content in another key order is the same schema.
    assert digest(dict(reversed(list(schema.items())))) in schemacheck.checked_digests()


def test_loading_the_catalog_records_every_schema_it_checked() -> None:
    catalog = Catalog.load()
    checked = set(schemacheck.checked_digests())
    assert {digest(tool.inputs_schema) for tool in catalog.tools.values()} <= checked
    assert {digest(goal.inputs_schema) for goal in catalog.goals.values()} <= checked


def test_a_trusted_digest_is_not_checked_again() -> None:
    # What a child does with its worker's digests: only a schema whose digest was handed over is skipped,
    # which is why an invalid one passes here (a worker never hands over an invalid schema's digest).
    trusted = {"type": "object", "properties": {"trusted": {"type": 7}}}
    schemacheck.trust_checked([digest(trusted)])
    schemacheck.check_schema(trusted)
    with pytest.raises(SchemaError):
        schemacheck.check_schema({"type": "object", "properties": {"untrusted": {"type": 7}}})


@pytest.mark.parametrize("bad", [["not-a-digest"], ["A" * 64], [42], [None], ["0" * 63]])
def test_what_is_not_a_digest_is_refused_whole(bad: list[object]) -> None:
    before = schemacheck.checked_digests()
    with pytest.raises(ValueError, match="not a schema digest"):
        schemacheck.trust_checked(["0" * 64, *bad])
    assert schemacheck.checked_digests() == before


@pytest.mark.parametrize("bad", ["0" * 64, ("0" * 64,), {"0" * 64: 1}, None])
def test_what_is_not_a_list_is_refused(bad: object) -> None:
    before = schemacheck.checked_digests()
    with pytest.raises(ValueError, match="not a list of schema digests"):
        schemacheck.trust_checked(bad)
    assert schemacheck.checked_digests() == before


def test_a_schema_without_a_canonical_form_is_checked_and_not_remembered() -> None:
    # json.load reads NaN, which canonical JSON refuses: such a schema is checked every time, as before.
    before = schemacheck.checked_digests()
    schemacheck.check_schema({"type": "number", "maximum": float("nan")})
    with pytest.raises(SchemaError):
        schemacheck.check_schema({"type": 5, "maximum": float("nan")})
    assert schemacheck.checked_digests() == before
