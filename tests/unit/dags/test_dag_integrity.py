"""Every DAG imports cleanly, cheaply, and explains itself."""

from __future__ import annotations

import pytest

from tests.support.paths import REPO  # noqa: E402

pytestmark = pytest.mark.unit

DAG_FILES = sorted((REPO / "dags").glob("*.py"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {d.fileloc for d in dagbag.dags.values()} == {str(f) for f in DAG_FILES}


def test_dags_follow_policy(dagbag):
    for dag in dagbag.dags.values():
        assert dag.doc_md and len(dag.doc_md) > 200, dag.dag_id
        assert dag.tags, dag.dag_id
        assert dag.catchup is False, dag.dag_id
        for task in dag.tasks:
            assert task.owner not in ("", "airflow"), (dag.dag_id, task.task_id)
            assert task.retries is not None, (dag.dag_id, task.task_id)


def test_every_param_explains_itself(dagbag):
    for dag in dagbag.dags.values():
        for name, param in dag.params.items():
            param = dag.params.get_param(name)
            schema = param.schema
            assert schema.get("title") and param.description, (dag.dag_id, name)
            assert "type" in schema or "enum" in schema, (dag.dag_id, name)
