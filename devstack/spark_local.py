"""How devstack runs an EMR step's spark-submit on this machine, for devstack and the benchmarks alike.

local[2] in client mode with the project's PySpark, no UI, and every scratch file
(Spark's local dir, the JVM's and Python's temp files) under the step's work
directory, so removing it removes them. The Python interpreter is the caller's
choice: devstack's steps take it from the cluster's Spark configuration (a
SPARK_CONF_DIR as EMR writes it, see devstack.aws.emr_node), the benchmarks use this one.

Spark reads and writes ``s3://`` itself, as EMRFS does on EMR: through Hadoop's S3A
client (``s3a_properties``) with the hadoop-aws and AWS SDK jars that match
pyspark 3.5.6's Hadoop 3.3.4, downloaded once from Maven Central into the
machine's cache and checked against pinned sha256 digests (``ensure_jars``;
``python -m devstack.spark_local jars``, which `make` runs).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from devstack.cache import cache_dir

# The venv's PySpark, next to the interpreter that runs devstack.
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
# Its Spark home: spark-submit's scripts find conf/, jars/ and python/lib/ there.
SPARK_HOME = Path((importlib.util.find_spec("pyspark").submodule_search_locations or [""])[0])  # type: ignore[union-attr]


MAVEN = "https://repo1.maven.org/maven2"
# (Maven path, sha256): what pyspark 3.5.6's Hadoop 3.3.4 client needs for s3a://.
JARS: tuple[tuple[str, str], ...] = (
    ("org/apache/hadoop/hadoop-aws/3.3.4/hadoop-aws-3.3.4.jar",
     "53f9ae03c681a30a50aa17524bd9790ab596b28481858e54efd989a826ed3a4a"),
    ("com/amazonaws/aws-java-sdk-bundle/1.12.262/aws-java-sdk-bundle-1.12.262.jar",
     "873fe7cf495126619997bec21c44de5d992544aea7e632fdc77adb1a0915bae5"),
)  # fmt: skip


def jar_paths() -> list[Path]:
    """Where the pinned jars live in the cache (they may not be there yet: see ensure_jars)."""
    return [cache_dir() / "jars" / path.rsplit("/", 1)[1] for path, _ in JARS]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_jars(log: bool = False) -> list[Path]:
    """The S3A jars, downloaded from Maven Central the first time and checked against their sha256.

    Idempotent and atomic (a download is checked under a temporary name, then renamed, so a
    jar in the cache was checked); a digest that does not match is an error naming the jar,
    never a jar on the classpath.
    """
    paths = []
    for (path, sha256), target in zip(JARS, jar_paths()):
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            if log:
                print(f"downloading {MAVEN}/{path}", flush=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
                with urllib.request.urlopen(f"{MAVEN}/{path}", timeout=300) as resp:
                    for chunk in iter(lambda: resp.read(1 << 20), b""):
                        tmp.write(chunk)
            got = _sha256(Path(tmp.name))
            if got != sha256:
                Path(tmp.name).unlink()
                raise RuntimeError(f"{MAVEN}/{path}: sha256 {got}, expected {sha256}: not used")
            os.replace(tmp.name, target)
        paths.append(target)
    return paths


def s3a_properties(endpoint_url: str, access_key: str, secret_key: str, jars: Sequence[Path]) -> dict[str, str]:
    """Spark properties that make s3:// (and s3a://) Hadoop's S3A client against ``endpoint_url``.

    What EMRFS is to EMR: the jobs open s3:// URIs through the Hadoop FileSystem API.
    Path-style requests and plain http for a local endpoint; the keys of the caller.
    """
    classpath = os.pathsep.join(str(jar) for jar in jars)
    return {
        "spark.driver.extraClassPath": classpath,
        "spark.executor.extraClassPath": classpath,
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
        "spark.hadoop.fs.s3a.endpoint": endpoint_url,
        "spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint_url.startswith("https:")).lower(),
        "spark.hadoop.fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "spark.hadoop.fs.s3a.access.key": access_key,
        "spark.hadoop.fs.s3a.secret.key": secret_key,
        # Fail in seconds, not after the SDK's long default retries, when devstack is gone.
        "spark.hadoop.fs.s3a.attempts.maximum": "3",
        "spark.hadoop.fs.s3a.retry.limit": "3",
        "spark.hadoop.fs.s3a.connection.establish.timeout": "5000",
    }


def command(work: Path, args: Sequence[str]) -> list[str]:
    """spark-submit with devstack's settings, then `args` (more options, the script, its arguments)."""
    return [
        str(SPARK_SUBMIT),
        "--master", "local[2]",
        "--deploy-mode", "client",
        "--conf", "spark.ui.enabled=false",
        "--conf", f"spark.local.dir={work / 'spark-local'}",
        *args,
    ]  # fmt: skip


# For jobs of seconds on small data: the JVM's quick compiler only. The bank-full
# features step took 17.9 s instead of 19.6 s and 21 s of CPU instead of 34 (C2's
# background compiles), which leaves a core to whatever else runs; long jobs on large
# data (the benchmarks) want C2's faster code and keep the default.
SHORT_JOB_JVM = "-XX:TieredStopAtLevel=1"


def environment(
    work: Path, *, python: str | None = None, conf_dir: Path | None = None, short_job: bool = False
) -> dict[str, str]:
    """This process's environment with the step's temp dir (`work`/tmp, which must exist).

    ``python``: the driver's and the workers' interpreter (PYSPARK_PYTHON, PYSPARK_DRIVER_PYTHON);
    None leaves the choice to ``conf_dir``'s spark-env.sh and spark-defaults.conf (SPARK_CONF_DIR).
    ``short_job``: run the JVM with SHORT_JOB_JVM. It goes in SPARK_SUBMIT_OPTS (the client-mode
    driver's JVM), so the step's own spark.driver.extraJavaOptions still apply as given.
    """
    tmp = work / "tmp"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_CONF_DIR"))}
    jvm = [os.environ.get("SPARK_SUBMIT_OPTS", ""), SHORT_JOB_JVM if short_job else "", f"-Djava.io.tmpdir={tmp}"]
    env.update(
        TMPDIR=str(tmp),
        SPARK_SUBMIT_OPTS=" ".join(o for o in jvm if o),
        SPARK_HOME=str(SPARK_HOME),
        SPARK_LOCAL_IP="127.0.0.1",
    )
    if python is not None:
        env.update(PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=python)
    if conf_dir is not None:
        env["SPARK_CONF_DIR"] = str(conf_dir)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.spark_local", description="devstack's local Spark")
    parser.add_argument("command", choices=("jars",), help="jars: fetch the S3A jars into the cache (idempotent)")
    parser.parse_args(argv)
    try:
        for path in ensure_jars(log=True):
            print(path)
    except (OSError, RuntimeError) as exc:
        print(f"devstack.spark_local: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
