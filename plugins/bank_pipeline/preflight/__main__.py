"""``python -m bank_pipeline.preflight [--json]``: the preflight's table; exit status 1 when a check fails.

Run it where the DAGs run (the same BANK_* settings and Airflow connections: an
Airflow worker, ``astro dev bash``, or a shell with AIRFLOW_CONN_* set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from bank_pipeline import preflight


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bank_pipeline.preflight", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)
    # Only the result goes to stdout: the hooks' log lines (Airflow logs to stdout) go to stderr.
    sys.stdout.flush()
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    rows = preflight.run()
    with result:
        if args.json:
            print(json.dumps([asdict(row) for row in rows], indent=2), file=result)
        else:
            print(preflight.table(rows), file=result)
    return 1 if preflight.failed(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
