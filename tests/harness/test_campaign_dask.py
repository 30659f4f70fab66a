"""A campaign on a real Dask distributed cluster: a scheduler and two workers started
as separate processes on this machine; its verdicts equal a local run's, seed for seed,
and a worker that dies mid-trial is retried once, as locally."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cli import main
from harness.dask_overhead import dask_cluster
from harness.journal import JOURNAL_NAME, read_journal

if not os.environ.get("CI"):  # under CI a missing dask is a failure (pyproject installs it)
    pytest.importorskip("distributed")

PLAN = {"faults": ("double_free", "overflow", "uaf_write"), "seeds": 3, "timeout_s": 30,
        "ops": 4000}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[str]:
    """A scheduler and two single-thread workers, each its own process (the Dask-overhead
    tool's cluster; a task whose worker dies is not handed to another one)."""
    with dask_cluster(2, tmp_path_factory.mktemp("dask"),
                      env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}) as address:
        yield address


def _verdicts(run_dir: Path) -> dict[str, tuple]:
    return {r.key: (r.verdict.outcome, r.verdict.passed,
                    tuple(sorted((f.kind, f.outcome) for f in r.verdict.faults)))
            for r in read_journal(run_dir / JOURNAL_NAME).records}


def test_dask_campaign_equals_the_local_one(cluster, tmp_path, write_plan, capsys):
    from _nmm_c import require_driver

    require_driver()
    plan = write_plan(**PLAN)
    common = [str(plan), "--targets", "nmm,glibc", "--levels", "standard,paranoid",
              "--split-faults", "-q"]
    assert main(["campaign", *common, "--out", str(tmp_path / "local")]) == 0
    assert main(["campaign", *common, "--scheduler", cluster,
                 "--out", str(tmp_path / "dask")]) == 0
    capsys.readouterr()
    (local,) = (tmp_path / "local").iterdir()
    (on_dask,) = (tmp_path / "dask").iterdir()
    local_v, dask_v = _verdicts(local), _verdicts(on_dask)
    assert len(local_v) == 3 * 3 * 2 + 3 * 3 == len(dask_v)
    assert dask_v == local_v
    workers = {r.worker.split(":")[1] for r in read_journal(on_dask / JOURNAL_NAME).records}
    assert len(workers) == 2  # both workers ran trials
    assert json.loads((on_dask / "result.json").read_text())["verdict"]["status"] == "pass"


def test_a_dask_worker_dying_mid_trial_is_retried_once(cluster, tmp_path, write_plan,
                                                       fake_driver, capsys, monkeypatch):
    """The fake driver kills its parent (the Dask worker, which its nanny restarts) the
    first time each seed runs; the campaign runs each trial again, once."""
    monkeypatch.setenv("FAKE_DRIVER_MARKS", str(tmp_path))
    plan = write_plan(**{**PLAN, "seeds": 2})
    code = main(["campaign", str(plan), "--scheduler", cluster, "--out", str(tmp_path / "r"),
                 "--driver", shlex.join(fake_driver("killparent")), "-q"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert err.count("retrying") == 2 and "KilledWorker" in err
    (run_dir,) = (tmp_path / "r").iterdir()
    records = read_journal(run_dir / JOURNAL_NAME).records
    assert sorted(r.seed for r in records) == [1, 2]
    assert all(r.verdict.passed for r in records)
