"""An MWAA Airflow 3 image's packages in a venv on this machine, with the bundle installed as MWAA installs it.

MWAA (tests/data/mwaa/README.md, from aws/amazon-mwaa-docker-images) installs a
requirements.txt without a ``-c`` line with::

    pip3 install --constraint mwaa_essential_constraints.txt -r requirements.txt -c airflow_constraints.txt

into an image that already holds Airflow and MWAA's own packages, installed under the same
constraints. Here, per MWAA version: the image's packages are resolved once per constraint
files and Python into a lock under the machine's cache (devstack.cache), a venv on this
machine's Python 3.11 (MWAA's 3.12 is not here) receives them, then the bundle: ``make mwaa``'s
requirements.txt naming the wheel inside the unpacked plugins.zip. uv stands in for pip (same
constraint semantics: constraints only bound versions, installed packages that satisfy them stay).

Used by tests/integration/packaging/test_mwaa_install.py (a fresh venv per test) and by
``make test-airflow-3.0`` (``python -m devstack.harness.mwaa_env venv 3.0.6``: a cached venv whose
Python runs the end-to-end tests' DAG-run children, BANK_AIRFLOW_PYTHON in devstack.harness.airflow_env).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from devstack.cache import cache_dir
from devstack.deploy import mwaa_bundle

REPO = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"
MWAA_DATA = REPO / "tests" / "data" / "mwaa"
VERSIONS = ("3.0.6", "3.2.1", "3.3.1")
ESSENTIAL = "mwaa_essential_constraints.txt"
AIRFLOW_CONSTRAINTS = "airflow_constraints.txt"
# What bootstrap/02-airflow/001-install-required-pip-packages.sh installs into the image, less
# psycopg2 and pycurl (sdists needing pg_config and libcurl headers, which this machine lacks)
# and boto3-stubs (type stubs): none of them bounds what the bundle needs.
IMAGE_PACKAGES = (
    "apache-airflow-providers-amazon[aiobotocore]",
    "apache-airflow[celery,statsd]=={version}",
    "apache-airflow-providers-postgres",
    "apache-airflow-providers-fab",
    "celery[sqs]",
    "watchtower",
    "fluent-logger",
    "virtualenv",
    "apache-airflow-providers-standard",
)
IMAGE_CORE_FROM = (3, 2)  # 3.2.1 and 3.3.1 also install apache-airflow-core[gunicorn]==<version>
# user_requirements._requirements_has_constraints: such a line means "no forced Airflow constraints".
MWAA_HAS_CONSTRAINTS = re.compile(r"-c |--constraint ")
DISTRIBUTION = "bank-marketing-release"
# The venv's inputs besides the image lock: a change to any of them rebuilds it (else only the bundle is reinstalled).
VENV_INPUTS = ("uv.lock", "pyproject.toml", "requirements.txt")


def run(argv: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with its output's tail if it fails."""
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=900, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(
            f"{[str(a) for a in argv[:4]]} exited {result.returncode}: {result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def constraint_files(version: str) -> tuple[Path, Path]:
    """(essential, Airflow's) constraint files of MWAA's image for ``version``."""
    return MWAA_DATA / version / ESSENTIAL, MWAA_DATA / version / AIRFLOW_CONSTRAINTS


def pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a constraints or lock file, by normalized name."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if match:
            found[normalize(match[1])] = match[2]
    return found


def image_packages(version: str) -> list[str]:
    """The requirements MWAA's image for ``version`` installs before the user's."""
    packages = [p.format(version=version) for p in IMAGE_PACKAGES]
    if tuple(int(x) for x in version.split(".")[:2]) >= IMAGE_CORE_FROM:
        packages.append(f"apache-airflow-core[gunicorn]=={version}")
    return packages


def mwaa_install_args(requirements: Path, version: str) -> list[str]:
    """The arguments of MWAA's ``pip3 install`` for a requirements.txt (safe-pip-install's and its caller's)."""
    essential, airflow = constraint_files(version)
    argv = ["--constraint", str(essential), "-r", str(requirements)]
    if not any(MWAA_HAS_CONSTRAINTS.search(line) for line in requirements.read_text().splitlines()):
        argv += ["-c", str(airflow)]  # "Forcing local constraints"
    return argv


def local_python() -> str | None:
    """Python 3.11, this machine's stand-in for MWAA's 3.12 (not here); None if there is none."""
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    return shutil.which("python3.11")


def python_version(python: str | Path) -> str:
    return run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]).stdout.strip()


def image_lock(version: str, python: str) -> Path:
    """The image's packages, resolved for ``python`` under both constraint files: cached by content."""
    essential, airflow = constraint_files(version)
    py_version = python_version(python)
    key = hashlib.sha256(
        essential.read_bytes() + airflow.read_bytes() + "\n".join([*image_packages(version), py_version]).encode()
    ).hexdigest()[:16]
    lock = cache_dir() / "mwaa" / f"{version}-py{py_version}-{key}.txt"
    if not lock.exists():
        lock.parent.mkdir(parents=True, exist_ok=True)
        wanted = lock.with_suffix(".in")
        wanted.write_text("\n".join(image_packages(version)) + "\n")
        partial = lock.with_suffix(".part")
        run([UV, "pip", "compile", "--quiet", "--no-header", "--python", python, "-c", essential, "-c", airflow,
             wanted, "-o", partial])  # fmt: skip
        partial.replace(lock)
    return lock


def installed(venv: Path) -> dict[str, str]:
    """Every distribution in ``venv`` and its version, by normalized name."""
    listed = json.loads(run([UV, "pip", "list", "--format", "json", "--python", venv / "bin" / "python"]).stdout)
    return {normalize(d["name"]): d["version"] for d in listed}


def make_image(venv: Path, version: str, python: str) -> dict[str, str]:
    """A fresh venv at ``venv`` holding the image's packages; returns them (name -> version)."""
    run([UV, "venv", "--quiet", "--python", python, venv])
    run([UV, "pip", "sync", "--quiet", "--python", venv / "bin" / "python", image_lock(version, python)])
    return installed(venv)


def build_bundle(root: Path) -> dict[str, Path]:
    """``make mwaa``'s output under ``root`` (replaced), plugins.zip unpacked where requirements.txt says the wheel is.

    Keys: ``root``, ``bundle`` (dags/, plugins.zip, requirements.txt), ``plugins`` (the unpacked plugins.zip,
    standing for /usr/local/airflow/plugins), ``wheel``.
    """
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    run([UV, "build", "--quiet", "--wheel", "--out-dir", root / "dist", REPO], cwd=root)
    (wheel,) = (root / "dist").glob("*.whl")
    plugins = root / "plugins"
    out = mwaa_bundle(wheel, root / "bundle", plugins_dir=str(plugins))
    plugins.mkdir()
    with zipfile.ZipFile(out / "plugins.zip") as archive:
        archive.extractall(plugins)
    return {"root": root, "bundle": out, "plugins": plugins, "wheel": wheel}


def install_bundle(venv: Path, requirements: Path, version: str, *, reinstall: bool = False) -> None:
    """MWAA's install command for ``requirements`` into ``venv`` (uv for pip); ``reinstall``: the bundle afresh
    even when its version is already there (its wheel's version does not change with the code)."""
    extra = ["--reinstall-package", DISTRIBUTION] if reinstall else []
    run([UV, "pip", "install", "--quiet", "--python", venv / "bin" / "python", *extra,
         *mwaa_install_args(requirements, version)])  # fmt: skip


def venv_key(version: str, python: str) -> str:
    """What a cached venv for ``version`` was built from: the image lock and the project's requirements."""
    digest = hashlib.sha256(image_lock(version, python).read_bytes())
    for name in VENV_INPUTS:
        digest.update((REPO / name).read_bytes())
    return digest.hexdigest()[:12]


def mwaa_venv(version: str) -> Path:
    """The cached venv of MWAA ``version``'s image with the checkout's bundle installed as MWAA does; its Python.

    Built once per image lock and uv.lock/pyproject.toml/requirements.txt (older builds for the version
    are removed); each call rebuilds the wheel from the checkout and reinstalls it with MWAA's command.
    Raises if the image's packages moved while the bundle was installed (MWAA's constraints forbid it).
    """
    python = local_python()
    if python is None:
        raise RuntimeError("no python3.11 on this machine (MWAA's Python is 3.12, absent here; 3.11 stands in)")
    home = cache_dir() / "mwaa"
    venv = home / f"venv-{version}-{venv_key(version, python)}"
    done = venv / ".bank-complete"
    bundle = build_bundle(home / f"bundle-{version}")
    requirements = bundle["bundle"] / "requirements.txt"
    if done.exists():
        install_bundle(venv, requirements, version, reinstall=True)
        return venv / "bin" / "python"
    for stale in home.glob(f"venv-{version}-*"):
        shutil.rmtree(stale)
    image = make_image(venv, version, python)
    if image.get("apache-airflow") != version:
        raise RuntimeError(f"the image lock installed apache-airflow {image.get('apache-airflow')}, not {version}")
    install_bundle(venv, requirements, version)
    after = installed(venv)
    moved = {n: (v, after.get(n)) for n, v in image.items() if after.get(n) != v}
    if moved or normalize(DISTRIBUTION) not in after:
        raise RuntimeError(f"installing the bundle changed the image's packages {moved} or did not install it")
    done.touch()
    return venv / "bin" / "python"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.harness.mwaa_env")
    sub = parser.add_subparsers(dest="cmd", required=True)
    venv = sub.add_parser("venv", help="build or refresh the cached venv of an MWAA version; print its Python")
    venv.add_argument("version", choices=VERSIONS)
    args = parser.parse_args(argv)
    print(mwaa_venv(args.version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
