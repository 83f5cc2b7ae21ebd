"""``python -m devstack.deploy {mwaa,astro} --wheel dist/X.whl``: the bundle in MWAA's or Astro's shape.

MWAA deploys a DAGs folder, ``plugins.zip`` (unpacked into /usr/local/airflow/plugins),
``requirements.txt`` and a startup script. The bundle's code is one wheel, so:

    <out>/dags/               the DAG files (wiring only)
    <out>/plugins.zip         the wheel + plugins/bank_pipeline_plugin.py (the AirflowPlugin)
    <out>/requirements.txt    the runtime requirements + the wheel, by its path inside plugins/
    <out>/startup.sh          exports the BANK_* settings (bank_pipeline/settings.py); edit its values

Upload ``dags/`` to the environment's DAGs folder and the other three files to its bucket
(plugins.zip, requirements.txt and startup.sh are the environment's "plugins file",
"requirements file" and "startup script"). requirements.txt has no ``-c`` line on purpose:
MWAA then installs it with ``pip3 install --constraint mwaa_essential_constraints.txt -r
requirements.txt -c airflow_constraints.txt`` (its image's files), so every package the
workers share with Airflow stays at the version MWAA tested.
tests/integration/packaging/test_deploy.py installs exactly this into a fresh environment;
tests/integration/packaging/test_mwaa_install.py installs it as each MWAA Airflow 3 image does.

``astro`` writes an Astro project (``astro dev init`` keeps files that exist, adding the rest):

    <out>/Dockerfile          FROM the Astro Runtime image + one RUN installing the wheel
    <out>/requirements.txt    the runtime requirements (the image's ONBUILD step installs them)
    <out>/packages.txt        empty (ONBUILD copies it: it must exist)
    <out>/include/<wheel>     the bundle's code
    <out>/dags/, <out>/plugins/bank_pipeline_plugin.py
    <out>/.env                the BANK_* settings for ``astro dev``; a Deployment takes them with
                              ``astro deployment variable create --load --env .env``

The wheel cannot be a requirements.txt line: the Runtime image's ONBUILD triggers install
requirements.txt (step 5) before they copy the project into the image (step 7), so a local
path is not there yet. The Dockerfile's own RUN comes after both. tests/integration/packaging/test_astro_install.py
installs the project as the Runtime image does (tests/data/astro/README.md: what is known of it).
"""

from __future__ import annotations

import argparse
import ast
import shlex
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MWAA_PLUGINS = "/usr/local/airflow/plugins"
PLUGIN_FILE = REPO / "plugins" / "bank_pipeline_plugin.py"
SETTINGS_FILE = REPO / "plugins" / "bank_pipeline" / "settings.py"
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
    (out / "requirements.txt").write_text("\n".join([*runtime_requirements(), f"{plugins_dir}/{wheel.name}"]) + "\n")
    (out / "startup.sh").write_text(startup_script())
    return out


# Settings whose default cannot be right in someone else's account: the script says so.
PLACEHOLDERS = {
    "BANK_LAKE_BUCKET": "<your-lake-bucket>",
    "BANK_LAMBDA_ROLE_ARN": "arn:aws:iam::<account-id>:role/<lambda-execution-role>",
}
# Read by bank_pipeline outside settings.py (links.py, by the API server); optional.
OPTIONAL_SETTINGS = {
    "BANK_KUBERNETES_DASHBOARD_URL": (
        "https://dashboard.example/#/deployment/{namespace}/{deployment}?namespace={namespace}",
        "URL template of a Kubernetes dashboard for the rollout task's link (none without it).",
    ),
    "BANK_LAMBDA_CONSOLE_URL": (
        "https://console.example.internal/lambda/{region}/{function}/versions/{version}",
        "URL template ({function}, {version}, {region}) for the deploy task's Lambda version link "
        "(default: the function version's page in the AWS console).",
    ),
}


def bank_settings(settings_file: Path = SETTINGS_FILE) -> list[tuple[str, str, str]]:
    """(variable, default, description) of every BANK_* setting ``load()`` reads, in its order.

    Read from the source (devstack does not import bank_pipeline): each ``Settings(field=...)``
    keyword of ``load()`` whose value calls ``env.get("BANK_...", default)``; the description is
    the field's docstring, if it has one.
    """
    tree = ast.parse(settings_file.read_text(), str(settings_file))
    docs: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Settings":
            for stmt, after in zip(node.body, node.body[1:]):
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                        docs[stmt.target.id] = " ".join(str(after.value.value).split())
    found: list[tuple[str, str, str]] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.FunctionDef) and node.name == "load"):
            continue
        for call in ast.walk(node):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Settings"):
                continue
            for keyword in call.keywords:
                for get in ast.walk(keyword.value):
                    if (
                        isinstance(get, ast.Call)
                        and isinstance(get.func, ast.Attribute)
                        and get.func.attr == "get"
                        and get.args
                        and isinstance(get.args[0], ast.Constant)
                        and str(get.args[0].value).startswith("BANK_")
                    ):
                        default = get.args[1] if len(get.args) > 1 else None
                        value = "" if default is None else str(ast.literal_eval(default))
                        found.append((str(get.args[0].value), value, docs.get(keyword.arg or "", "")))
    if not found:
        raise ValueError(f"no BANK_* settings found in {settings_file}: has load() changed shape?")
    return found


def setting_lines(assign: Callable[[str, str], str], settings_file: Path = SETTINGS_FILE) -> list[str]:
    """Every BANK_* setting as ``assign(name, value)`` after its description; optional ones commented out.

    The values are the settings' defaults, except PLACEHOLDERS, marked EDIT: a user must replace them.
    """
    lines = []
    for name, default, doc in bank_settings(settings_file):
        if doc:
            lines.append(f"# {doc}")
        if name in PLACEHOLDERS:
            lines.append(f"# EDIT: no default fits every account (settings.py's is {default!r}).")
        lines.append(assign(name, PLACEHOLDERS.get(name, default)))
    for name, (example, doc) in OPTIONAL_SETTINGS.items():
        lines += [f"# Optional. {doc}", f"# {assign(name, example)}"]
    return lines


def startup_script(settings_file: Path = SETTINGS_FILE) -> str:
    """MWAA's startup script for the bundle: ``export BANK_...=...`` for every setting.

    MWAA sources it with bash before each component (scheduler, worker, triggerer, web server)
    starts, at most 5 minutes, and gives the variables it exports to Airflow's processes,
    except MWAA__* and the ones MWAA reserves (AIRFLOW_HOME, AIRFLOW_VERSION, PYTHONPATH,
    AWS_REGION, AWS_DEFAULT_REGION...): BANK_* names are none of those. The values are the
    settings' defaults, except PLACEHOLDERS, which a user must replace.
    """
    lines = [
        "#!/usr/bin/env bash",
        "# MWAA startup script of the bank-marketing bundle (written by `make mwaa`: devstack/deploy.py).",
        "# MWAA sources it with bash before every Airflow component starts; Airflow's processes get the",
        "# variables it exports. Edit the values, upload it to the environment's bucket and set it as the",
        "# environment's startup script. Each value below is the setting's default unless marked EDIT.",
        "# Names and meanings: plugins/bank_pipeline/settings.py. Do not `exit` from this file.",
        "",
    ]
    lines += setting_lines(lambda name, value: f"export {name}={shlex.quote(value)}", settings_file)
    names = " ".join(PLACEHOLDERS)
    lines += [
        "",
        "# A value still in <angle brackets> has not been edited: say so in the startup log.",
        f"for _bank_var in {names}; do",
        '  case "${!_bank_var}" in *"<"*">"*) echo "bank startup.sh: WARNING: edit ${_bank_var} (${!_bank_var})" ;; esac',
        "done",
        "unset _bank_var",
        "",
    ]
    return "\n".join(lines)


# Astro Runtime 3.x images (Airflow 3) come from this registry, tagged <airflow major.minor>-<patch>
# with -python-3.11/-3.13 variants (3.12 is the default). 3.3-8 is the newest tag seen in public
# projects (tests/data/astro/README.md); pin the one your Deployment runs.
ASTRO_RUNTIME_IMAGE = "astrocrpublic.azurecr.io/runtime"
ASTRO_RUNTIME_TAG = "3.3-8"
# The project's folder in the image: ONBUILD's `COPY --chown=astro:0 . .` puts it here.
ASTRO_PROJECT_DIR = "/usr/local/airflow"


def astro_dockerfile(wheel_name: str, runtime_tag: str = ASTRO_RUNTIME_TAG) -> str:
    """The Astro project's Dockerfile: the Runtime image, then the wheel without resolving anything.

    ``--no-deps``: requirements.txt holds exactly the wheel's dependencies (test_deploy checks it)
    and ONBUILD has installed them, so this step can only add the bundle, never move a package.
    """
    return "\n".join(
        [
            "# Astro project of the bank-marketing bundle (written by `make astro`: devstack/deploy.py).",
            f"FROM {ASTRO_RUNTIME_IMAGE}:{runtime_tag}",
            "# The image's ONBUILD triggers have run here: packages.txt, then requirements.txt",
            "# (/usr/local/bin/install-python-dependencies), then this folder copied to",
            f"# {ASTRO_PROJECT_DIR}. The wheel is installed after them: it cannot be a requirements.txt",
            "# line because requirements.txt is installed before the folder is copied.",
            "USER root",
            f"RUN pip install --no-cache-dir --no-deps {ASTRO_PROJECT_DIR}/include/{wheel_name}",
            "USER astro",
            "",
        ]
    )


def dotenv(settings_file: Path = SETTINGS_FILE) -> str:
    """``.env`` with every BANK_* setting: ``astro dev`` passes it to each container.

    Docker's env-file syntax (NAME=value, no quotes, no expansion), which
    ``astro deployment variable create --load`` also reads.
    """
    lines = [
        "# BANK_* settings of the bank-marketing bundle (written by `make astro`: devstack/deploy.py).",
        "# `astro dev start` gives them to every Airflow container; for a Deployment run",
        "# `astro deployment variable create --deployment-id <id> --load --env .env`.",
        "# Values are the settings' defaults unless marked EDIT; meanings: plugins/bank_pipeline/settings.py.",
    ]
    return "\n".join(lines + setting_lines(lambda name, value: f"{name}={value}", settings_file)) + "\n"


def astro_project(wheel: Path, out: Path, runtime_tag: str = ASTRO_RUNTIME_TAG) -> Path:
    """Write the Astro project of the bundle under ``out`` (replacing it); return ``out``."""
    if out.exists():
        shutil.rmtree(out)
    (out / "include").mkdir(parents=True)
    (out / "plugins").mkdir()
    shutil.copytree(REPO / "dags", out / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(PLUGIN_FILE, out / "plugins" / PLUGIN_FILE.name)
    shutil.copy2(wheel, out / "include" / wheel.name)
    (out / "Dockerfile").write_text(astro_dockerfile(wheel.name, runtime_tag))
    (out / "requirements.txt").write_text("\n".join(runtime_requirements()) + "\n")
    (out / "packages.txt").write_text("")
    (out / ".env").write_text(dotenv())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.deploy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mwaa = sub.add_parser("mwaa", help="dags/, plugins.zip, requirements.txt and startup.sh for MWAA")
    mwaa.add_argument("--wheel", type=Path, required=True)
    mwaa.add_argument("--out", type=Path, default=REPO / "build" / "mwaa")
    astro = sub.add_parser("astro", help="an Astro project: Dockerfile, requirements.txt, include/<wheel>, dags/, .env")
    astro.add_argument("--wheel", type=Path, required=True)
    astro.add_argument("--out", type=Path, default=REPO / "build" / "astro")
    astro.add_argument("--runtime", default=ASTRO_RUNTIME_TAG, help=f"Astro Runtime tag (default {ASTRO_RUNTIME_TAG})")
    args = parser.parse_args(argv)
    if not args.wheel.is_file():
        print(f"devstack.deploy: error: no wheel at {args.wheel} (run `make wheel`)", file=sys.stderr)
        return 2
    if args.command == "astro":
        out = astro_project(args.wheel, args.out, args.runtime)
        print(f"Astro project in {out}: `astro dev init` there (keeps these files), edit .env, `astro dev start`")
        return 0
    out = mwaa_bundle(args.wheel, args.out)
    print(f"MWAA bundle in {out}: dags/, plugins.zip, requirements.txt, startup.sh (edit its values)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
