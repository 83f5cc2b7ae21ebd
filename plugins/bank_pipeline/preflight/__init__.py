"""The preflight: what an account, a cluster and an Airflow deployment lack before the DAGs' first run.

Every check is read-only, says what it checked and, when it fails, what to change
(the console setting, the template parameter, the command). ``run`` gives one row a
check; ``table`` renders them; ``python -m bank_pipeline.preflight`` and the DAG
``bank_preflight`` show that table and fail when any row fails.

Status: ``ok``; ``fail`` (a DAG run would fail); ``warn`` (only some runs would fail,
e.g. one instance type of the Param's choices); ``skip`` (not configured, e.g. no
Kubernetes target, or a check could not run because an earlier one failed).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bank_pipeline.settings import Settings

STATUSES = ("ok", "warn", "fail", "skip")


@dataclass(frozen=True)
class Row:
    """One check's outcome."""

    area: str
    check: str
    status: str
    detail: str
    fix: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; known: {', '.join(STATUSES)}")


class Skip(Exception):
    """A check cannot run for a reason another row already reports (or nothing is configured)."""


class Fail(Exception):
    """A check failed: the message says what was found, ``fix`` what to change."""

    def __init__(self, detail: str, fix: str = "") -> None:
        super().__init__(detail)
        self.fix = fix


class Warn(Fail):
    """Only some runs would fail."""


CheckFn = Callable[..., str]
"""A check: returns what it found (status ok), or raises Fail/Warn/Skip."""


def outcome(area: str, check: str, fn: CheckFn, *args: Any) -> Row:
    """Run one check; an AWS or API error it did not expect becomes a failed row naming it."""
    try:
        return Row(area, check, "ok", fn(*args))
    except Warn as exc:
        return Row(area, check, "warn", str(exc), exc.fix)
    except Fail as exc:
        return Row(area, check, "fail", str(exc), exc.fix)
    except Skip as exc:
        return Row(area, check, "skip", str(exc))
    except Exception as exc:  # noqa: BLE001 - the row names the error; the run goes on to the next check
        return Row(area, check, "fail", f"{type(exc).__name__}: {exc}", denied_fix(exc))


def denied_fix(exc: BaseException) -> str:
    """What to do about an access-denied error: the worker policy (the template's) lacks an action."""
    text = str(exc)
    if "AccessDenied" in text or "not authorized" in text:
        return (
            "the worker's identity lacks this read: attach the stack's AirflowWorkerPolicyArn "
            "(infra/bank-ml.cfn.yaml) to it, or add the action named above (docs/interfaces.md, IAM)"
        )
    return ""


def run(cfg: Settings | None = None) -> list[Row]:
    """Every check, in order: Airflow's settings and connections, then AWS, then Kubernetes."""
    from bank_pipeline.preflight import airflow_checks, aws_checks, kubernetes_checks

    rows, cfg = airflow_checks.settings_rows(cfg)
    if cfg is None:
        return rows
    rows += airflow_checks.connection_rows(cfg)
    rows += aws_checks.run_checks(cfg)
    rows += kubernetes_checks.run_checks(cfg)
    return rows


def report(cfg: Settings | None = None) -> list[dict[str, str]]:
    """Run every check as a task does: log the table, raise PreflightFailedError naming each failed
    check and its fix, else return the rows (the task's XCom)."""
    import logging
    from dataclasses import asdict

    from bank_pipeline.errors import PreflightFailedError

    rows = run(cfg)
    logging.getLogger(__name__).info("preflight:\n%s", table(rows))
    bad = failed(rows)
    if bad:
        raise PreflightFailedError(
            f"{len(bad)} check(s) failed: " + "; ".join(f"{r.area} {r.check}: {r.detail} (fix: {r.fix})" for r in bad)
        )
    return [asdict(row) for row in rows]


def failed(rows: Iterable[Row]) -> list[Row]:
    return [row for row in rows if row.status == "fail"]


def table(rows: list[Row], width: int = 100) -> str:
    """The rows as a fixed-width table (for a log or a terminal), fixes indented under their row."""
    area_w = max([len("area"), *(len(r.area) for r in rows)])
    check_w = max([len("check"), *(len(r.check) for r in rows)])
    detail_w = max(30, width - area_w - check_w - 12)
    lines = [f"{'area':<{area_w}}  {'check':<{check_w}}  {'status':<6}  detail", "-" * width]
    for row in rows:
        detail = textwrap.wrap(row.detail, detail_w) or [""]
        lines.append(f"{row.area:<{area_w}}  {row.check:<{check_w}}  {row.status.upper():<6}  {detail[0]}")
        pad = " " * (area_w + check_w + 12)
        lines += [pad + more for more in detail[1:]]
        for i, fix in enumerate(textwrap.wrap(row.fix, detail_w - 5)):
            lines.append(pad + ("fix: " if i == 0 else "     ") + fix)
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    lines += ["-" * width, ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    return "\n".join(lines)


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table (the DAG's task note and docs)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| area | check | status | detail | fix |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {cell(r.area)} | {cell(r.check)} | {r.status} | {cell(r.detail)} | {cell(r.fix)} |" for r in rows]
    return "\n".join(lines) + "\n"


def iter_pages(method: Callable[..., dict[str, Any]], key: str, token: str, **kwargs: Any) -> Iterator[Any]:
    """Every item under ``key`` of a paginated AWS list call (NextToken or Marker)."""
    while True:
        page = method(**kwargs)
        yield from page.get(key, [])
        nxt = page.get(token)
        if not nxt:
            return
        kwargs[token] = nxt  # the answer names its next page as the request takes it (Marker, NextToken)
