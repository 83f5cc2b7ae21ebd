"""tests/conftest.py's collection rules, on a suite of their own: a test outside tests/<its kind>/ is a usage error."""

from __future__ import annotations

import pytest

from tests.support.pytester_ini import INI

pytestmark = pytest.mark.unit


def test_a_test_outside_the_directory_of_its_kind_is_refused_naming_it(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        **{
            "tests/unit/test_placed.py": "import pytest\npytestmark = pytest.mark.unit\ndef test_here(): pass\n",
            "tests/unit/test_slow.py": "import pytest\npytestmark = pytest.mark.integration\ndef test_there(): pass\n",
            "tests/e2e/dags/test_quick.py": "import pytest\n@pytest.mark.unit\ndef test_elsewhere(): pass\n",
        }
    )
    result = pytester.runpytest("-p", "tests.conftest", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*tests/unit/test_slow.py::test_there (marked integration)*"])
    result.stderr.fnmatch_lines(["*tests/e2e/dags/test_quick.py::test_elsewhere (marked unit)*"])
    assert "test_placed.py" not in result.stderr.str()


def test_tests_in_the_directories_of_their_kinds_are_collected(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        **{
            "tests/unit/a/test_one.py": "import pytest\npytestmark = pytest.mark.unit\ndef test_one(): pass\n",
            "tests/integration/a/test_two.py": "import pytest\n@pytest.mark.integration\ndef test_two(): pass\n",
            "tests/e2e/test_three.py": "import pytest\npytestmark = pytest.mark.e2e\ndef test_three(): pass\n",
        }
    )
    result = pytester.runpytest("-p", "tests.conftest", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    result.stdout.fnmatch_lines(["3 tests collected*"])


def test_a_test_using_a_shared_fixture_outside_its_group_is_refused_naming_it(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    fixture = "import pytest\n@pytest.fixture\ndef airflow(): return {}\n"
    uses = "import pytest\npytestmark = pytest.mark.{kind}\ndef test_it(airflow): pass\n"
    pytester.makepyfile(
        **{
            "tests/e2e/conftest.py": fixture,
            "tests/e2e/dags/test_grouped.py": uses.format(kind="e2e"),
            "tests/e2e/other/test_stray.py": uses.format(kind="e2e"),
        }
    )
    result = pytester.runpytest("-p", "tests.conftest", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*tests/e2e/other/test_stray.py::test_it (uses airflow)*"])
    assert "test_grouped.py" not in result.stderr.str()


def test_a_module_is_its_own_group_unless_it_shares_a_session_fixture() -> None:
    from tests.conftest import xdist_group

    assert xdist_group("tests/e2e/dags/test_bank_model_release.py::test_x[a::b]") == "airflow"
    assert xdist_group("tests/e2e/devstack/harness/test_airflow_env.py::test_y") == "airflow"
    assert xdist_group("tests/integration/bank_ml/test_train.py::test_z") == "full_run"
    assert xdist_group("tests/e2e/devstack/harness/test_ui.py::test_w") == "stack_up"
    assert xdist_group("tests/e2e/devstack/harness/test_stack.py::test_v") == "stack_up"
    assert (
        xdist_group("tests/integration/bank_spark/test_csv_rows.py::t")
        == "tests/integration/bank_spark/test_csv_rows.py"
    )
