"""Did-you-mean: the closest valid key or value, in plan errors and --set."""

from __future__ import annotations

import pytest

from harness.errors import PlanError
from harness.loader import load_plan
from harness.suggest import closest, did_you_mean


@pytest.mark.parametrize(("word", "choices", "hit"), [
    ("cuont", ["bytes", "count", "fail", "kind", "rate", "variant"], "count"),
    ("thread", ["threads", "thread_churn", "live"], "threads"),
    ("mised", ["detected", "missed", "hang"], "missed"),
    ("Paranoid", ["off", "standard", "paranoid"], "paranoid"),
    ("xyzzy", ["count", "rate"], None),
    ("count", ["count"], None),  # the word itself is no suggestion
    ("", ["count"], None),
])
def test_closest(word, choices, hit):
    assert closest(word, choices) == hit


def test_did_you_mean_text():
    assert did_you_mean("cuont", ["count"]) == "did you mean 'count'?"
    assert did_you_mean("xyzzy", ["count"]) == ""


def test_plan_key_misspelt_in_a_file_gets_a_suggestion(write_plan):
    path = write_plan('schema_version = 1\n[[faults]]\nkind = "double_free"\ncuont = 2\n')
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(info.value) == (
        f"{path}: faults.0.cuont: unknown key; expected one of: bytes, count, fail, kind, "
        "rate, skip, variant; did you mean 'count'?")


@pytest.mark.parametrize(("override", "message"), [
    ("workload.thraeds=2", "--set workload.thraeds=2: workload.thraeds: unknown key; "
     "expected one of: aligned, bad_options, calloc, calloc_count, check, cross, duration_s, "
     "edge_every, exit_damage, exit_held, exit_leaks, exit_symbolizer, fork_every, live, "
     "ops, progress_every, realloc, sizes, thread_churn, threads, worker_ops; did you mean "
     "'threads'?"),
    ("target.level=paranoi", "--set target.level=paranoi: target.level: given 'paranoi'; "
     "expected 'off', 'standard' or 'paranoid'; did you mean 'paranoid'?"),
    ("sed=3", "did you mean 'seed'?"),
    ('expect.faults.doble_free.outcome=["missed"]',
     "--set expect.faults.doble_free.outcome=[\"missed\"]: expect.faults.doble_free: "
     "given 'doble_free'; expected 'double_free', "),
])
def test_set_override_misspelt_gets_a_suggestion(write_plan, override, message):
    with pytest.raises(PlanError) as info:
        load_plan(write_plan("schema_version = 1\n"), [override])
    assert message in str(info.value)
    assert len(info.value.problems) == 1


def test_a_bad_list_item_is_one_problem_not_two(write_plan):
    """``expect.outcome=["mised"]`` also reported "expected a list with at least 1 item":
    the list was only short because its one item was rejected."""
    with pytest.raises(PlanError) as info:
        load_plan(write_plan("schema_version = 1\n"), ['expect.outcome=["mised"]'])
    assert info.value.problems == (
        "--set expect.outcome=[\"mised\"]: expect.outcome.0: given 'mised'; expected "
        "'detected', 'detected-abort', 'crashed', 'missed', 'false-positive', 'hang', "
        "'deadlock' or 'clean'; did you mean 'missed'?",)


def test_an_empty_list_still_says_too_short(write_plan):
    with pytest.raises(PlanError, match=r"expect\.outcome: given \[\]; expected a list with "
                                        r"at least 1 item"):
        load_plan(write_plan("schema_version = 1\n"), ["expect.outcome=[]"])
