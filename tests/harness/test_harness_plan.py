"""Plan loading: schema, include, overrides, error messages, and a hypothesis property
that any document gives either a valid plan or a PlanError naming file and key."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from harness.errors import PlanError
from harness.loader import load_plan, parse_override, validate_paths
from harness.plan import FAULT_KINDS, Plan

PLANS = Path(__file__).resolve().parent.parent.parent / "chaos_plans"


def test_minimal_plan_gets_defaults(write_plan):
    plan = load_plan(write_plan("schema_version = 1\n", "tiny.toml"))
    assert plan.name == "tiny"
    assert plan.target.label == "nmm:standard"
    assert plan.workload.threads == 2
    assert plan.scheduler.kind == "free"
    assert plan.expect.outcome == ("detected",)


def test_every_shipped_plan_is_valid():
    results = validate_paths([PLANS])
    names = {p.name for p, _ in results}
    for required in ("base.toml", "smoke.toml", "nightly.toml", "double_free.toml",
                     "invalid_free.toml", "overflow.toml", "underflow.toml", "uaf_write.toml",
                     "realloc_freed.toml", "alloc_failure.toml", "bench_churn.toml"):
        assert required in names
    bad = [(p, r) for p, r in results if isinstance(r, PlanError)]
    assert bad == []


def test_smoke_covers_every_fault_kind_but_uaf_read():
    """zero_size_write kills the process at paranoid (smoke's level): its own plan;
    corrupt_meta needs the chaos build's driver (smoke runs against every peer): its own
    plans, in the smoke campaign."""
    plan = load_plan(PLANS / "smoke.toml")
    assert {f.kind for f in plan.faults} == set(FAULT_KINDS) - {"uaf_read", "zero_size_write",
                                                                 "corrupt_meta"}


def test_the_nightly_campaign_runs_every_fault_kind_with_level_expectations():
    """Every kind is in a plan of the nightly campaign; each of issue 11's
    one-kind plans says what off (which promises nothing) and paranoid must do."""
    from harness.campaign import entry_path, load_campaign_file

    spec = load_campaign_file(PLANS / "campaigns" / "nightly.toml")
    kinds = {f.kind for e in spec.plans for f in load_plan(entry_path(e)).faults}
    assert kinds == set(FAULT_KINDS)
    for kind in ("dealloc_mismatch", "sized_delete", "memcpy_overflow", "exit_only_overflow",
                 "zero_size_write"):
        plan = load_plan(PLANS / f"{kind}.toml")
        assert {f.kind for f in plan.faults} == {kind} and plan.nmm_level == "standard"
        assert plan.expect.allowed_for(kind, "off") == ("missed",)
        assert "paranoid" in plan.expect.levels


def test_benchmark_plans_have_no_faults():
    for path in PLANS.glob("bench_*.toml"):
        assert load_plan(path).faults == ()


def test_include_deep_merges_and_including_file_wins(write_plan):
    write_plan("""
        schema_version = 1
        seeds = 3
        [workload]
        threads = 4
        live = 77
        [target]
        level = "paranoid"
    """, "base.toml")
    plan = load_plan(write_plan("""
        include = "base.toml"
        [workload]
        threads = 8
    """))
    assert plan.workload.threads == 8
    assert plan.workload.live == 77
    assert plan.seeds == 3
    assert plan.target.level == "paranoid"


def test_include_is_relative_to_the_including_file(tmp_path, write_plan):
    (tmp_path / "sub").mkdir()
    write_plan("schema_version = 1\nseeds = 5\n", "sub/base.toml")
    write_plan('include = "base.toml"\n', "sub/child.toml")
    plan = load_plan(write_plan('include = "sub/child.toml"\n', "top.toml"))
    assert plan.seeds == 5


def test_include_cycle_is_an_error(write_plan):
    write_plan('include = "b.toml"\nschema_version = 1\n', "a.toml")
    path = write_plan('include = "a.toml"\n', "b.toml")
    with pytest.raises(PlanError, match="include cycle"):
        load_plan(path)


def test_missing_include_names_the_including_file(write_plan):
    path = write_plan('include = "nope.toml"\nschema_version = 1\n')
    with pytest.raises(PlanError, match=r"nope.toml: no such plan file \(included from"):
        load_plan(path)


def test_include_of_a_directory_says_so_and_names_the_including_file(tmp_path, write_plan):
    (tmp_path / "sub").mkdir()
    path = write_plan('include = "sub"\nschema_version = 1\n')
    with pytest.raises(PlanError, match=r"sub: is a directory, not a plan file "
                                        r"\(included from .*plan.toml\)"):
        load_plan(path)


@pytest.mark.parametrize("include", ['""', '["  "]', '["base.toml", 3]', "{}"])
def test_include_that_is_not_file_names_is_an_error(write_plan, include):
    """An empty name used to include the plan's own directory ('.: cannot read')."""
    path = write_plan(f"include = {include}\nschema_version = 1\n")
    with pytest.raises(PlanError, match=r"plan.toml: include: given .*; expected a file name"):
        load_plan(path)


def test_error_in_base_names_the_base_file(write_plan):
    write_plan("schema_version = 1\n[workload]\nthreads = -3\n", "base.toml")
    path = write_plan('include = "base.toml"\n')
    with pytest.raises(PlanError) as info:
        load_plan(path)
    message = str(info.value)
    assert "base.toml: workload.threads: given -3; expected greater than or equal to 1" \
        in message


def test_unknown_key_lists_valid_keys(write_plan):
    path = write_plan("schema_version = 1\n[workload]\nthread = 4\n")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert (f"{path}: workload.thread: unknown key; expected one of: aligned, bad_options, "
            "calloc, calloc_count, check, cross,") in str(info.value)
    assert "threads" in str(info.value)


def test_bad_variant_names_the_fault_key(write_plan):
    path = write_plan("""
        schema_version = 1
        [[faults]]
        kind = "invalid_free"
        variant = "sideways"
    """)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert ("faults.0.variant: given 'sideways'; expected one of interior, stack, wild, "
            "foreign_heap") in str(info.value)


def test_a_controlled_scheduler_loads_and_needs_the_chaos_build(write_plan):
    plan = load_plan(write_plan('schema_version = 1\n[scheduler]\nkind = "pct"\ndepth = 3\n'))
    assert plan.scheduler.controlled and plan.needs_chaos_build
    assert plan.scheduler.driver_args() == ["--scheduler", "pct", "--depth", "3"]
    assert not load_plan(write_plan("schema_version = 1\n")).needs_chaos_build


@pytest.mark.parametrize("body, said", [
    ('kind = "random"\ndepth = 2', "scheduler.depth: given 2; expected no depth (it applies "
                                   "to pct only)"),
    ('kind = "pct"\npos_p = 0.5', "scheduler.pos_p: given 0.5; expected no pos_p"),
    ('max_steps = 10', "scheduler.max_steps: given 10; expected no max_steps"),
])
def test_scheduler_keys_that_do_not_apply_are_named(write_plan, body, said):
    with pytest.raises(PlanError, match=re.escape(said)):
        load_plan(write_plan(f"schema_version = 1\n[scheduler]\n{body}\n"))


def test_invalid_toml_names_the_file_and_position(write_plan):
    path = write_plan("schema_version = = 1\n")
    with pytest.raises(PlanError, match=rf"{path.name}: invalid TOML: .*line 1"):
        load_plan(path)


def test_missing_schema_version(write_plan):
    with pytest.raises(PlanError, match="schema_version: required key is missing"):
        load_plan(write_plan("seed = 1\n"))


def test_wrong_schema_version(write_plan):
    with pytest.raises(PlanError, match="schema_version: given 2; expected 1"):
        load_plan(write_plan("schema_version = 2\n"))


def test_bad_fail_spec(write_plan):
    path = write_plan('schema_version = 1\n[[faults]]\nkind = "alloc_failure"\n'
                      'fail = "pool.grow@sometimes"\n')
    with pytest.raises(PlanError, match=r"faults.0.fail: given 'pool.grow@sometimes'"):
        load_plan(path)


@pytest.mark.parametrize(("text", "key", "value"), [
    ("workload.threads=8", ["workload", "threads"], 8),
    ("workload.cross=0.5", ["workload", "cross"], 0.5),
    ("target.level=paranoid", ["target", "level"], "paranoid"),
    ('target.level="off"', ["target", "level"], "off"),
    ('expect.outcome=["missed"]', ["expect", "outcome"], ["missed"]),
    ("workload.check=false", ["workload", "check"], False),
])
def test_parse_override(text, key, value):
    assert parse_override(text) == (key, value)


def test_overrides_apply_and_are_validated(write_plan):
    path = write_plan('schema_version = 1\n[[faults]]\nkind = "overflow"\nbytes = 1\n')
    plan = load_plan(path, ["workload.threads=8", "target.level=paranoid", "faults.0.bytes=16",
                            "target.options.quarantine=\"8M\""])
    assert plan.workload.threads == 8
    assert plan.target.level == "paranoid"
    assert plan.faults[0].bytes == 16
    assert plan.target.nmm_options() == "level=paranoid:policy=record:quarantine=8M"
    with pytest.raises(PlanError, match=r"--set workload.threads=zero: workload.threads: "
                                        r"given 'zero'"):
        load_plan(path, ["workload.threads=zero"])


@pytest.mark.parametrize("bad", ["noequals", "=3", "a..b=1", "faults.9.count=1",
                                 "seed.x=1"])
def test_malformed_overrides_are_plan_errors(write_plan, bad):
    path = write_plan("schema_version = 1\nseed = 4\n[[faults]]\nkind = 'double_free'\n")
    with pytest.raises(PlanError, match="--set"):
        load_plan(path, [bad])


def test_plan_hash_ignores_seed_but_not_workload(write_plan):
    path = write_plan("schema_version = 1\n")
    a = load_plan(path)
    assert a.plan_hash() == load_plan(path, ["seed=99", "seeds=4"]).plan_hash()
    assert a.plan_hash() != load_plan(path, ["workload.threads=3"]).plan_hash()


def test_plans_are_frozen(write_plan):
    plan = load_plan(write_plan("schema_version = 1\n"))
    with pytest.raises(ValidationError, match="frozen"):
        plan.workload.threads = 9  # type: ignore[misc]


def test_rate_becomes_a_count():
    plan = Plan.model_validate({"schema_version": 1, "workload": {"threads": 2, "ops": 5000},
                                "faults": [{"kind": "double_free", "rate": 0.001}]})
    assert plan.faults[0].driver_arg(plan.total_ops) == "double_free:count=10"


# ---------------------------------------------------------------- property tests

_scalars = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=False, width=32),
                     st.booleans(), st.text(max_size=12))
_keys = st.sampled_from(["schema_version", "seed", "seeds", "name", "timeout_s", "target",
                         "workload", "faults", "expect", "scheduler", "bogus", "kind",
                         "level", "policy", "threads", "ops", "sizes", "live", "cross",
                         "count", "variant", "bytes", "fail", "outcome", "options", "lo",
                         "hi", "weight", "duration_s", "worker_ops"])
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=4)), max_leaves=12)

_fault = st.fixed_dictionaries({"kind": st.sampled_from([*FAULT_KINDS, "nope"])}, optional={
    "count": st.integers(-1, 5), "variant": st.sampled_from(["interior", "first", "x"]),
    "bytes": st.integers(0, 64), "fail": st.sampled_from(["alloc@every10", "alloc@x", "q@p0.1"]),
})
_plausible = st.fixed_dictionaries(
    {"schema_version": st.sampled_from([1, 1, 1, 2, "1"])},
    optional={
        "seed": st.integers(-2, 2**64 + 2), "seeds": st.integers(-1, 10),
        "timeout_s": st.floats(-1, 12),
        "target": st.fixed_dictionaries({}, optional={
            "kind": st.sampled_from(["nmm", "malloc", "x"]),
            "level": st.sampled_from(["off", "standard", "paranoid", "max"]),
            "policy": st.sampled_from(["record", "abort", 3]),
            "peer": st.sampled_from(["glibc", ""]),
            "options": st.dictionaries(st.sampled_from(["quarantine", "Bad", "level"]),
                                       st.one_of(st.integers(0, 9), st.just("4M"),
                                                 st.just("a:b")), max_size=2)}),
        "workload": st.fixed_dictionaries({}, optional={
            "threads": st.integers(-1, 2000), "ops": st.integers(0, 10),
            "duration_s": st.floats(-1, 10), "cross": st.floats(-0.5, 1.5),
            "worker_ops": st.lists(st.integers(-1, 12), max_size=3),
            "sizes": st.lists(st.one_of(st.just("16-64:2"), st.just("9-3"),
                                        st.just("zz"), st.fixed_dictionaries(
                                            {"lo": st.integers(-1, 10),
                                             "hi": st.integers(-1, 10)})), max_size=3)}),
        "faults": st.lists(_fault, max_size=3),
        "scheduler": st.fixed_dictionaries({}, optional={
            "kind": st.sampled_from(["free", "pct", "x"]), "depth": st.integers(0, 3)}),
        "expect": st.fixed_dictionaries({}, optional={
            "outcome": st.lists(st.sampled_from(["detected", "missed", "boom"]), max_size=2),
            "faults": st.dictionaries(st.sampled_from(["uaf_write", "nope"]),
                                      st.fixed_dictionaries({"outcome": st.just(["missed"])}),
                                      max_size=1)}),
        "bogus": _values,
    })


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + "}"


def _to_toml(doc: dict[str, Any]) -> str:
    return "\n".join(f'"{k}" = {_toml_value(v)}' for k, v in doc.items()) + "\n"


def _check_loads_or_explains(path: Path) -> None:
    try:
        plan = load_plan(path)
    except PlanError as exc:
        text = str(exc)
        assert str(path) in text or "--set" in text
        assert "Traceback" not in text
        for problem in exc.problems:
            assert ": " in problem
    else:
        assert isinstance(plan, Plan)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_plausible)
def test_property_plausible_documents_load_or_explain(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("p") / "plan.toml"
    text = _to_toml(doc)
    tomllib.loads(text)  # the generator itself writes valid TOML
    path.write_text(text)
    _check_loads_or_explains(path)


@settings(max_examples=150, deadline=None)
@given(doc=st.dictionaries(_keys, _values, max_size=6))
def test_property_random_documents_load_or_explain(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("r") / "plan.toml"
    path.write_text(_to_toml(doc))
    _check_loads_or_explains(path)


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=200))
def test_property_arbitrary_bytes_load_or_explain(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("b") / "plan.toml"
    path.write_bytes(raw)
    _check_loads_or_explains(path)


@settings(max_examples=100, deadline=None)
@given(override=st.text(max_size=30))
def test_property_overrides_load_or_explain(tmp_path_factory, override):
    path = tmp_path_factory.mktemp("o") / "plan.toml"
    path.write_text("schema_version = 1\n[[faults]]\nkind = 'overflow'\n")
    try:
        load_plan(path, [override])
    except PlanError as exc:
        assert "Traceback" not in str(exc)


def test_include_then_switch_target_kind_replaces_the_table(write_plan):
    write_plan('schema_version = 1\n[target]\nlevel = "paranoid"\npolicy = "abort"\n',
               "base.toml")
    plan = load_plan(write_plan('include = "base.toml"\n[target]\nkind = "malloc"\n'
                                'peer = "jemalloc"\n'))
    assert plan.target.label == "malloc:jemalloc"


def test_unknown_key_in_a_malloc_target_lists_its_keys(write_plan):
    path = write_plan('schema_version = 1\n[target]\nkind = "malloc"\npeer = "glibc"\n'
                      'level = "off"\n')
    with pytest.raises(PlanError, match=r"target\.level: unknown key; expected one of: kind, peer"):
        load_plan(path)


@pytest.mark.parametrize(("spec", "ok"), [
    ("alloc@every50,max20", True), ("alloc", True), ("pool.grow@p0.01", True),
    ("alloc@p5%", True), ("alloc@p0.5%", True), ("alloc@after100,every3,max5", True),
    ("large.map@min1M;alloc@maxsize64k", True), ("alloc@off", True),
    ("alloc@p2", False), ("alloc@p101%", False), ("heap@every1", False), ("alloc@", False),
    ("alloc@every", False), ("alloc@sometimes", False),
])
def test_fail_spec_grammar(spec, ok):
    from harness.plan import fail_spec_problem

    assert (fail_spec_problem(spec) is None) == ok


@pytest.mark.parametrize(("overrides", "label"), [
    (["target=malloc:glibc"], "malloc:glibc"),
    (["target=nmm:off"], "nmm:off"),
    (["target.kind=malloc", "target.peer=scudo"], "malloc:scudo"),
    (['target="malloc:jemalloc"'], "malloc:jemalloc"),
])
def test_target_can_be_switched_from_the_command_line(write_plan, overrides, label):
    path = write_plan('schema_version = 1\n[target]\nlevel = "paranoid"\n')
    assert load_plan(path, overrides).target.label == label


def test_bad_target_short_form(write_plan):
    with pytest.raises(PlanError, match=r"target: given 'jemalloc'; expected nmm, "
                                        r"nmm:<level>, malloc:<peer> or lib:<path>"):
        load_plan(write_plan('schema_version = 1\ntarget = "jemalloc"\n'))


def test_nmm_options_are_checked_by_the_allocator_parser_naming_key_and_file(write_plan):
    """They passed validation and failed the run's first trial (a traceback under
    --engine python)."""
    write_plan('schema_version = 1\n[target]\noptions = { quarantine = "lots" }\n', "base.toml")
    path = write_plan('include = "base.toml"\n[target.options]\nfrob = 1\nsweep = 10\n')
    with pytest.raises(PlanError) as info:
        load_plan(path)
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith(f"{path.parent / 'base.toml'}: target.options.quarantine: "
                                  "bad value 'lots' for key 'quarantine'")
    assert problems[1].startswith(f"{path}: target.options.frob: unknown key 'frob'")
    with pytest.raises(PlanError, match=r"^--set target.options.sweep=-1: target.options.sweep"):
        load_plan(write_plan("schema_version = 1\n", "ok.toml"), ["target.options.sweep=-1"])


def test_process_options_go_to_the_driver_environment_and_are_checked(write_plan):
    """target.process_options: NMM_OPTIONS process keys for the driver process (its
    environment, not its heap's options); a heap key or an unknown key there is named."""
    from harness._peers import resolve_target

    path = write_plan('schema_version = 1\n[target]\nlevel = "paranoid"\n'
                      'process_options = { avx2 = 0 }\n')
    target = load_plan(path).target
    assert target.process_env() == {"NMM_OPTIONS": "avx2=0"}
    resolved = resolve_target(target)
    assert dict(resolved.env) == {"NMM_OPTIONS": "avx2=0"}
    assert resolved.child_env({"NMM_OPTIONS": "level=off", "PATH": "/bin"}) == {
        "NMM_OPTIONS": "avx2=0", "PATH": "/bin"}
    assert "avx2=0" not in target.nmm_options()
    assert resolve_target(load_plan(write_plan("schema_version = 1\n", "plain.toml")
                                    ).target).env == ()
    with pytest.raises(PlanError) as info:
        load_plan(path, ["target.process_options.sweep=10"])
    assert "target.process_options.sweep: a heap key (one heap's option): set it in " \
           "target.options" in str(info.value)
    with pytest.raises(PlanError, match=r"target.process_options.frob: unknown key 'frob'"):
        load_plan(path, ["target.process_options.frob=1"])


@pytest.mark.parametrize(("override", "expected"), [
    ("name=", "name: given ''; expected a string with at least 1 character"),
    ("target=malloc:FOO", "target.peer: given 'FOO'; expected a string matching pattern"),
    ("workload.sizes=[]", "workload.sizes: given []; expected a list with at least 1 item"),
    ("workload=3", "workload: given 3; expected a table"),
    ("faults={}", "faults: given {}; expected a list"),
])
def test_expected_is_said_in_toml_words(write_plan, override, expected):
    """Not pydantic's ('expected String should have ...', 'a valid dictionary or
    instance of Workload', '... after validation, not 0')."""
    with pytest.raises(PlanError) as info:
        load_plan(write_plan("schema_version = 1\n"), [override])
    assert str(info.value).startswith(f"--set {override}: {expected}")


@pytest.mark.parametrize(("plan", "override", "expected"), [
    ('[[faults]]\nkind = "double_free"\n', "faults.x.count=2",
     "faults.x: given 'x'; expected an index 0..0"),
    ('[[faults]]\nkind = "double_free"\n', "faults.3.count=2",
     "faults.3: given '3'; expected an index 0..0"),
    ("faults = []\n", "faults.0.count=2",
     "faults.0: given '0'; expected nothing: the list is empty"),
])
def test_override_of_a_list_item_names_the_index_given(write_plan, plan, override, expected):
    with pytest.raises(PlanError) as info:
        load_plan(write_plan("schema_version = 1\n" + plan), [override])
    assert str(info.value) == f"--set {override!r}: {expected}"
