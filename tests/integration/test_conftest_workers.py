"""make test's two workers (tests/conftest.py): a shared group runs whole on one worker, in file order."""

from __future__ import annotations

import os

import pytest

from tests.support.paths import REPO
from tests.support.pytester_ini import INI

pytestmark = pytest.mark.integration

# Each test appends its worker and name to a file of its own; a group's tests must share a worker.
RECORD = """import os, pytest
pytestmark = pytest.mark.{kind}
{tests}
"""
TEST = "def test_{n}({fixture}):\n    open('{out}/{n}', 'w').write(os.environ['PYTEST_XDIST_WORKER'])\n"


def test_a_shared_group_runs_on_one_worker_and_other_modules_spread(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The workers import tests.conftest from this checkout.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    pytester.makeini(INI)
    out = pytester.path / "out"
    out.mkdir()

    def module(kind: str, names: list[str], fixture: str = "") -> str:
        return RECORD.format(kind=kind, tests="".join(TEST.format(n=n, fixture=fixture, out=out) for n in names))

    pytester.makepyfile(
        **{
            "tests/e2e/conftest.py": "import pytest\n@pytest.fixture(scope='session')\ndef airflow(): return {}\n",
            "tests/e2e/dags/test_a.py": module("e2e", ["a1", "a2", "a3"], "airflow"),
            "tests/e2e/bank_pipeline/test_b.py": module("e2e", ["b1", "b2"], "airflow"),
            **{f"tests/unit/test_u{i}.py": module("unit", [f"u{i}{j}" for j in range(3)]) for i in range(6)},
        }
    )
    result = pytester.runpytest_subprocess("-p", "tests.conftest", "-n", "2", "--dist", "loadgroup", "-q")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    worker = {path.name: path.read_text() for path in out.iterdir()}
    assert len(worker) == 5 + 18
    assert len({worker[n] for n in ("a1", "a2", "a3", "b1", "b2")}) == 1  # the airflow group: one worker
    for i in range(6):
        assert len({worker[f"u{i}{j}"] for j in range(3)}) == 1  # a module: one worker
    assert set(worker.values()) == {"gw0", "gw1"}  # and both workers had work
