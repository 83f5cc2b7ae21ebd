"""``python -m devstack.deploy mwaa --wheel dist/X.whl --out build/mwaa``: the bundle in MWAA's shape.

MWAA deploys a DAGs folder, ``plugins.zip`` (unpacked into /usr/local/airflow/plugins)
and ``requirements.txt``. The bundle's code is one wheel, so:

    <out>/dags/               the DAG files (wiring only)
    <out>/plugins.zip         the wheel + plugins/bank_pipeline_plugin.py (the AirflowPlugin)
    <out>/requirements.txt    the runtime requirements + the wheel, by its path inside plugins/

Upload ``dags/`` to the environment's DAGs folder and the other two files to its bucket.
tests/packaging/test_deploy.py installs exactly this into a fresh environment.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MWAA_PLUGINS = "/usr/local/airflow/plugins"
PLUGIN_FILE = REPO / "plugins" / "bank_pipeline_plugin.py"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def runtime_requirements() -> list[str]:
    """requirements.txt's requirement lines (comments and blanks dropped)."""
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def mwaa_bundle(wheel: Path, out: Path, plugins_dir: str = MWAA_PLUGINS) -> Path:
    """Write the MWAA shape of the bundle under ``out`` (replacing it); return ``out``.

    ``plugins_dir`` is where the platform unpacks plugins.zip (MWAA's by default); the
    requirements name the wheel there.
    """
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copytree(REPO / "dags", out / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    with zipfile.ZipFile(out / "plugins.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for path in (wheel, PLUGIN_FILE):
            info = zipfile.ZipInfo(path.name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    (out / "requirements.txt").write_text(
        "\n".join([*runtime_requirements(), f"{plugins_dir}/{wheel.name}"]) + "\n"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.deploy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mwaa = sub.add_parser("mwaa", help="dags/, plugins.zip and requirements.txt for MWAA")
    mwaa.add_argument("--wheel", type=Path, required=True)
    mwaa.add_argument("--out", type=Path, default=REPO / "build" / "mwaa")
    args = parser.parse_args(argv)
    if not args.wheel.is_file():
        print(f"devstack.deploy: error: no wheel at {args.wheel} (run `make wheel`)", file=sys.stderr)
        return 2
    out = mwaa_bundle(args.wheel, args.out)
    print(f"MWAA bundle in {out}: dags/, plugins.zip, requirements.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
