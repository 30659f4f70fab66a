"""plan_differences (what a refused --resume names) and the keys left out of plan_hash."""

from __future__ import annotations

import pytest

from harness.errors import PlanError
from harness.loader import load_plan
from harness.plan import plan_differences


def test_differences_name_each_changed_key_with_both_values(write_plan):
    path = write_plan('schema_version = 1\n[workload]\nops = 100\n[[faults]]\n'
                      'kind = "double_free"\n')
    before = load_plan(path).model_dump(mode="json")
    after = load_plan(path, ["workload.ops=200", "faults.0.count=3", "seeds=9",
                             'name="other"']).model_dump(mode="json")
    assert plan_differences(before, after) == [("faults.0.count", None, 3),
                                              ("workload.ops", 100, 200)]


def test_a_fault_added_or_removed_is_named_by_its_index():
    before = {"faults": [{"kind": "overflow"}]}
    after = {"faults": [{"kind": "overflow"}, {"kind": "underflow"}]}
    assert plan_differences(before, after) == [("faults.1.kind", None, "underflow")]
    assert plan_differences(after, before) == [("faults.1.kind", "underflow", None)]


def test_lists_of_plain_values_compare_whole():
    assert plan_differences({"expect": {"outcome": ["detected"]}},
                            {"expect": {"outcome": ["detected", "missed"]}}) == [
        ("expect.outcome", ["detected"], ["detected", "missed"])]


def test_markers_change_neither_the_hash_nor_the_differences(write_plan):
    path = write_plan("schema_version = 1\n")
    plain, marked = load_plan(path), load_plan(path, ['markers=["slow", "nightly"]'])
    assert marked.markers == ("slow", "nightly")
    assert plain.plan_hash() == marked.plan_hash()
    assert plan_differences(plain.model_dump(mode="json"), marked.model_dump(mode="json")) == []


def test_a_marker_must_be_a_name(write_plan):
    with pytest.raises(PlanError, match=r"markers\.0: given 'not slow'; expected a string "
                                        r"matching"):
        load_plan(write_plan("schema_version = 1\n"), ['markers=["not slow"]'])
