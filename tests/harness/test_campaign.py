"""nmm-chaos campaign: plans x seeds x targets x levels on local worker processes, one
journal, workers dying mid-trial, SIGKILL and resume, a user's library as a target, and
targets that are not installed."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from harness.cli import main
from harness.journal import JOURNAL_NAME, read_journal
from harness.robustness import SCHEMA_PATH

REPO = Path(__file__).resolve().parent.parent.parent
FAULTS = ("double_free", "overflow", "alloc_failure")


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def only_dir(path: Path) -> Path:
    (found,) = [p for p in path.iterdir() if p.is_dir()]
    return found


def validate(doc: dict) -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)


def test_campaign_runs_every_plan_target_level_and_seed_once(tmp_path, write_plan,
                                                              fake_driver, capsys):
    plan = write_plan(faults=FAULTS, seeds=2)
    code, out, err = run(["campaign", str(plan), "--targets", "nmm,glibc",
                          "--levels", "off,paranoid", "--split-faults", "--workers", "2",
                          "--driver", shlex.join(fake_driver("detect")),
                          "--out", str(tmp_path / "r"), "-q"], capsys)
    assert code == 0, out + err
    run_dir = only_dir(tmp_path / "r")
    records = read_journal(run_dir / JOURNAL_NAME).records
    # 3 fault entries x 2 levels x 2 seeds, and glibc takes the two it can (no fail points)
    assert len(records) == 3 * 2 * 2 + 2 * 2
    assert len({r.key for r in records}) == len(records)
    assert {r.target for r in records} == {"nmm:off", "nmm:paranoid", "malloc:glibc"}
    assert all(r.worker for r in records)  # ran in a worker process, which said where
    doc = json.loads((run_dir / "result.json").read_text())
    validate(doc)
    assert doc["verdict"]["status"] == "pass"
    # only the plan's own target gates: nmm:paranoid's 3 entries x 2 seeds
    assert doc["summary"]["gating_trials"] == 6
    assert doc["matrix"]["double_free"]["malloc:glibc"]["detected"] == 2
    # fail points are NMM's: glibc has no alloc_failure trials
    assert set(doc["matrix"]["alloc_failure"]) == {"nmm:off", "nmm:paranoid"}
    md = (run_dir / "summary.md").read_text()
    assert "**PASS**" in md and "| double_free | 2/2 | 2/2 | 2/2 |" in md
    junit = (run_dir / "junit.xml").read_text()
    assert junit.count("<testcase") == len(records)
    assert (run_dir / "report.html").stat().st_size > 0
    assert "report: " in out and "report.html" in out


def test_campaign_exit_1_names_the_failure_and_its_replay(tmp_path, write_plan, fake_driver,
                                                         capsys):
    plan = write_plan(faults=FAULTS, seeds=2)
    code, out, _ = run(["campaign", str(plan), "--driver", shlex.join(fake_driver("miss")),
                        "--out", str(tmp_path / "r"), "-q"], capsys)
    assert code == 1 and "FAIL:" in out
    doc = json.loads((only_dir(tmp_path / "r") / "result.json").read_text())
    validate(doc)
    failure = doc["failures"][0]
    assert failure["gating"] and failure["outcome"] == "missed"
    assert shlex.split(failure["replay"])[1:] == [
        "run", str(plan), "--driver", shlex.join(fake_driver("miss")),
        "--seed", str(failure["seed"]), "--seeds", "1"]


def test_a_worker_dying_mid_trial_is_retried_once_then_recorded(tmp_path, write_plan,
                                                               fake_driver, capsys,
                                                               monkeypatch):
    monkeypatch.setenv("FAKE_DRIVER_MARKS", str(tmp_path))
    plan = write_plan(faults=FAULTS, seeds=3)
    code, _, err = run(["campaign", str(plan), "--workers", "2", "--out", str(tmp_path / "a"),
                        "--driver", shlex.join(fake_driver("killparent")), "-q"], capsys)
    assert code == 0, err
    assert err.count("retrying") == 3
    records = read_journal(only_dir(tmp_path / "a") / JOURNAL_NAME).records
    assert sorted(r.seed for r in records) == [1, 2, 3]
    assert all(r.verdict.passed for r in records)

    code, _, err = run(["campaign", str(plan), "--workers", "2", "--out",
                          str(tmp_path / "b"), "-q",
                          "--driver", shlex.join(fake_driver("killparent-always"))], capsys)
    assert code == 1
    records = read_journal(only_dir(tmp_path / "b") / JOURNAL_NAME).records
    assert sorted(r.seed for r in records) == [1, 2, 3]  # recorded, never dropped
    assert {r.verdict.outcome for r in records} == {"infra-failure"}
    assert "the worker died on all 2 tries" in records[0].verdict.reasons[0]
    assert "killed by signal 9" in records[0].verdict.reasons[0]


def _journal_lines(out: Path) -> int:
    """Trial records (not trial_start lines) in the campaign's journal."""
    try:
        lines = (only_dir(out) / JOURNAL_NAME).read_bytes().splitlines()
    except (FileNotFoundError, ValueError):
        return 0
    return sum(1 for line in lines if line.strip() and b'"trial_start"' not in line)


def test_sigkill_then_resume_runs_every_missing_trial_exactly_once(tmp_path, write_plan,
                                                                   fake_driver):
    """Trials with seeds above 3 wait at a gate opened only after the kill, so the
    campaign dies at a known point however slowly the machine runs it."""
    plan = write_plan(faults=FAULTS, seeds=8)
    out = tmp_path / "r"
    gate = tmp_path / "gate"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FAKE_DRIVER_GATE": f"3:{gate}"}
    base = [sys.executable, "-m", "harness.cli", "campaign", "-q"]
    driver = shlex.join(fake_driver("gated"))
    proc = subprocess.Popen([*base, str(plan), "--workers", "2", "--targets", "nmm",
                             "--levels", "off,paranoid", "--driver", driver, "--out",
                             str(out)], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and _journal_lines(out) < 3:
            time.sleep(0.02)
        assert _journal_lines(out) >= 3, f"no 3 trials recorded (exit {proc.poll()})"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gate.touch()
    run_dir = only_dir(out)
    contents = read_journal(run_dir / JOURNAL_NAME)
    before, cut = contents.records, contents.unfinished
    assert 3 <= len(before) < 16
    # the gated trials were given to workers with their identity journaled first
    assert cut and all(ident["seed"] > 3 for ident in cut.values())
    assert {r.key for r in before}.isdisjoint(cut)
    resumed = subprocess.run([*base, "--resume", str(run_dir)], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    lines = [json.loads(ln) for ln in (run_dir / JOURNAL_NAME).read_bytes().splitlines()
             if ln.strip()]
    keys = [ln["key"] for ln in lines if ln.get("type") != "trial_start"]
    assert len(keys) == len(set(keys)) == 16  # every trial, each written once
    assert {r.key for r in before} <= set(keys)
    # started once each, the ones the kill cut short once more (and only once) on resume
    starts = [ln["key"] for ln in lines if ln.get("type") == "trial_start"]
    assert sorted(starts) == sorted([*keys, *cut])
    validate(json.loads((run_dir / "result.json").read_text()))


def test_resume_refuses_a_new_definition(tmp_path, write_plan, fake_driver, capsys):
    plan = write_plan(faults=FAULTS)
    code, _, _ = run(["campaign", str(plan), "--driver", shlex.join(fake_driver("detect")),
                      "--out", str(tmp_path / "r"), "-q"], capsys)
    assert code == 0
    run_dir = only_dir(tmp_path / "r")
    code, _, err = run(["campaign", str(plan), "--seeds", "3", "--resume", str(run_dir)],
                       capsys)
    assert code == 2
    assert "campaign.json defines it; leave out PLANS, --seeds" in err


@pytest.mark.parametrize(("targets", "message"), [
    ("jemmaloc", "unknown target 'jemmaloc'; expected one of plan, nmm, peers, glibc"),
    ("jemmaloc", "did you mean 'jemalloc'?"),
    ("nmm:paranoia", "--levels: given 'paranoia'"),
    ("lib:/nonexistent/libfoo.so", "--targets lib:/nonexistent/libfoo.so: no such file"),
])
def test_bad_targets_are_one_clear_line(tmp_path, write_plan, targets, message, capsys):
    code, out, err = run(["campaign", str(write_plan(faults=FAULTS)), "--targets",
                          targets, "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in out + err
    assert not (tmp_path / "r").exists()


def test_a_target_that_is_not_installed_names_its_debian_package(tmp_path, write_plan,
                                                                 monkeypatch, capsys):
    import harness._peers as peers

    real = peers.all_targets
    monkeypatch.setattr(peers, "all_targets", lambda lib_dirs=None: real(["/nonexistent"]))
    import harness.campaign as campaign

    monkeypatch.setattr(campaign, "all_targets", peers.all_targets)
    code, _, err = run(["campaign", str(write_plan(faults=FAULTS)), "--targets",
                        "jemalloc", "--out", str(tmp_path / "r")], capsys)
    assert code == 2
    assert err.strip() == (
        "error: --targets jemalloc: jemalloc is not installed (looked for libjemalloc.so.2 "
        "or libjemalloc.so in /nonexistent); install the Debian package libjemalloc2 "
        "(apt-get install libjemalloc2)")


WRAPPER = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
extern void *__libc_malloc(size_t), *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t), __libc_free(void *);
__attribute__((constructor)) static void hello(void) {
    const char *tag = getenv("WRAP_TAG");
    char line[128];
    int n = snprintf(line, sizeof line, "wrap: loaded, tag=%s\n", tag ? tag : "(none)");
    write(2, line, (size_t)n);
}
void *malloc(size_t n) { return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { return __libc_realloc(p, n); }
void free(void *p) { __libc_free(p); }
"""


def test_a_users_library_is_a_target(tmp_path, write_plan, capsys):
    """An allocator developer points the plans at their own malloc (a wrapper over glibc's
    here, which says it was loaded and with what environment)."""
    from _nmm_c import require_driver

    require_driver()
    src = tmp_path / "wrap.c"
    src.write_text(WRAPPER)
    lib = tmp_path / "libwrap.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(lib), str(src)], check=True)
    plan = write_plan(faults=FAULTS, seeds=2, ops=2000)
    code, _, err = run(["campaign", str(plan), "--targets", f"plan,lib:{lib}",
                          "--target-env", "WRAP_TAG=night", "--out", str(tmp_path / "r"),
                          "-q"], capsys)
    assert code in (0, 1), err
    run_dir = only_dir(tmp_path / "r")
    label = f"lib:{lib}+WRAP_TAG=night"
    records = [r for r in read_journal(run_dir / JOURNAL_NAME).records if r.target == label]
    assert len(records) == 2  # alloc_failure dropped: a library has no fail points
    caught = reached = 0
    for r in records:
        assert "wrap: loaded, tag=night" in r.observation.stderr_tail
        assert r.observation.start is not None and r.observation.start["target"] == "malloc"
        # glibc under the wrapper: its own checks catch a double free in some states
        # (a block in the tcache) and not in others, so count what the trials say; its
        # abort at the overflow ("free(): invalid next size"), when that comes first,
        # ends the trial before the double free
        (outcome,) = [f.outcome for f in r.verdict.faults if f.kind == "double_free"]
        assert outcome in ("detected-abort", "missed", "crashed", "not-reached")
        caught += outcome == "detected-abort"
        reached += outcome != "not-reached"
    doc = json.loads((run_dir / "result.json").read_text())
    validate(doc)
    cell = doc["matrix"]["double_free"][label]
    assert (cell["reached"], cell["detected"]) == (reached, caught)
    replay = next(f["replay"] for f in doc["failures"] if f["target"] == label)
    assert "--set 'target={kind = \"lib\", path = " in replay and "WRAP_TAG = \"night\"" in replay


def test_a_plan_no_fault_of_which_applies_to_a_target_is_skipped_with_a_note(
        tmp_path, write_plan, fake_driver, capsys):
    plan = write_plan("schema_version = 1\n[[faults]]\nkind = \"alloc_failure\"\n",
                      "failing.toml")
    code, _, err = run(["campaign", str(plan), "--targets", "plan,glibc", "--driver",
                        shlex.join(fake_driver("detect")), "--out", str(tmp_path / "r"), "-q"],
                       capsys)
    assert code == 0, err
    assert ("note: failing x malloc:glibc: skipped, its faults (alloc_failure) need an NMM "
            "heap's fail points") in err
    records = read_journal(only_dir(tmp_path / "r") / JOURNAL_NAME).records
    assert {r.target for r in records} == {"nmm:standard"}


def test_the_shipped_campaign_files_define_their_campaigns():
    """Every plan and setting of chaos_plans/campaigns/ resolves (nothing is run)."""
    from harness.campaign import define, expand, load_campaign_file

    for path in sorted((REPO / "chaos_plans" / "campaigns").glob("*.toml")):
        spec = load_campaign_file(path)
        targets = [t for t in spec.targets if t != "peers"]  # peers: whatever is installed
        defn = define(list(spec.plans), name=spec.name, seeds=spec.seeds, targets=targets,
                      levels=spec.levels, split_faults=spec.split_faults)
        assert expand(defn), path


def test_peers_that_map_a_page_per_block_run_their_capped_op_count(write_plan):
    """Electric Fence and DUMA slow down by orders of magnitude: their trials run at most
    their cap (as bench does), other targets the plan's ops."""
    from harness._peers import get_target
    from harness.campaign import define, expand

    if not get_target("efence").installed:
        if os.environ.get("CI"):
            pytest.fail("electric-fence is not installed (.ci/run installs it)")
        pytest.skip("electric-fence is not installed")
    plan = write_plan(faults=FAULTS, ops=50000)
    trials = expand(define([plan], targets=["plan", "efence"]))
    ops = {t.plan.target.label: t.plan.workload.ops for t in trials}
    assert ops == {"nmm:paranoid": 50000, "malloc:efence": get_target("efence").max_ops}


@pytest.mark.parametrize(("signum", "code", "said"), [
    (signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_stopped_campaign_kills_its_trials_and_says_how_to_resume(
        tmp_path, write_plan, fake_driver, signum, code, said):
    import psutil
    from _procs import alive

    plan = write_plan(faults=FAULTS, seeds=4)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "campaign", str(plan), "--workers", "2", "-q",
         "--driver", shlex.join(fake_driver("hang")), "--out", str(tmp_path / "r")],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    def drivers() -> list[psutil.Process]:
        found = []
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:  # a child may exit (and be a zombie) while we look
                if "fake_driver.py" in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.Error:
                pass
        return found

    try:
        running: list[psutil.Process] = []
        deadline = time.monotonic() + 120
        while len(running) < 2 and time.monotonic() < deadline:
            running = drivers()
            time.sleep(0.05)
        assert len(running) == 2, "the workers never started two trials"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == code, err
    assert err.startswith(f"{said}: 0 trial(s) kept") and "Traceback" not in err
    run_dir = only_dir(tmp_path / "r")
    assert err.rstrip().endswith(f"campaign --resume {run_dir}")
    psutil.wait_procs(running, timeout=20)
    assert not [d for d in running if alive(d)]
    assert read_journal(run_dir / JOURNAL_NAME).records == []


def test_plans_validate_takes_a_campaign_file_for_its_plans(tmp_path, write_plan, capsys):
    write_plan(name="one.toml", faults=FAULTS)
    camp = tmp_path / "c.toml"
    camp.write_text('[campaign]\nplans = ["one.toml", "missing.toml"]\n')
    code, out, err = run(["plans", "validate", str(camp)], capsys)
    assert code == 2
    assert "one.toml" in out and "missing.toml: no such plan file" in out + err
    camp.write_text('[campaign]\nplans = ["one.toml"]\nseedz = 3\n')
    code, out, err = run(["plans", "validate", str(camp)], capsys)
    assert code == 2 and "campaign.seedz" in out + err and "did you mean 'seeds'?" in out + err


@pytest.mark.parametrize(("address", "why"), [
    ("not an address", ""),
    # distributed half-starts a client on it, whose finalizer blocked the exit a minute
    ("tcp://nmm-scheduler", ", which has no port"),
])
def test_a_bad_scheduler_address_is_one_line_and_leaves_no_directory(tmp_path, write_plan,
                                                                     address, why, capsys):
    code, out, err = run(["campaign", str(write_plan(faults=FAULTS)), "--scheduler",
                          address, "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "Traceback" not in out + err
    assert err.strip() == (f"error: --scheduler: given {address!r}{why}; expected a "
                           "scheduler address such as tcp://host:8786")
    assert not (tmp_path / "r").exists()
