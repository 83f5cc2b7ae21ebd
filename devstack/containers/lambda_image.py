"""The local Lambda Python base image, built without pulling anything, and the serving image on it.

``python -m devstack.containers.lambda_image build [--push HOST:PORT/REPO:TAG]`` makes
``localhost/bank-lambda-base:<hash12>`` (and ``:latest``) in the project's podman
store (``devstack.containers.podman``) from three inputs, each cached under
``${BANK_CACHE_DIR:-$HOME/.cache/bank-ml}``:

1. a Debian bookworm rootfs: ``debootstrap --variant=minbase
   --include=python3,python-is-python3,python3-pip bookworm ROOT <apt's mirror>``,
   apt caches removed, kept as ``lambda-base/rootfs-<hash12>.tar`` and imported
   with ``podman import`` as ``localhost/bank-debian-rootfs:<hash12>``;
2. AWS's Runtime Interface Emulator, ``go install
   github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@<version>``
   (static, CGO_ENABLED=0) into ``rie/<version>/``;
3. ``podman build --network=host`` of ``devstack/containers/lambda-base.Containerfile``
   FROM the rootfs image: awslambdaric from PyPI (``lambda-runtime.txt``, hashes
   required) under /var/runtime, the RIE, ``/lambda-entrypoint.sh``, the Lambda
   variables, WORKDIR /var/task, ENTRYPOINT ["/lambda-entrypoint.sh"].

Content-hash caching: ``inputs_hash()`` is the sha256 of what decides the image
(suite, variant, packages, the runtime requirements, the RIE module and version
and build flags, the entrypoint script, the Containerfile, this builder's
version). The image carries it as the label ``org.bank-ml.lambda-base.inputs``
and in its tag; a build whose hash has an image does nothing (``cached``), and
one whose rootfs tarball exists skips debootstrap. Not in the hash: the Debian
mirror's current package versions (a rebuild after ``--force`` may get newer
point releases) and the Go toolchain that builds the RIE.

``python -m devstack.containers.lambda_image serving [--base REF] [--tag REF]`` builds
serving/Dockerfile on that base (``--build-arg BASE_IMAGE=...``; its pip step
reaches PyPI, so ``--network=host``). ``hash`` prints the inputs hash, ``ref`` the
base's reference if it is built (exit 1 if not). Run heavy builds under
``nice -n 19``: debootstrap, the Go build and pip inherit it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bank_pipeline.utils import oci, oci_image, oci_layer
from devstack.cache import cache_dir
from devstack.containers import podman as pm
from devstack.containers.image_push import push

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_DIR = Path(__file__).resolve().parent
CONTAINERFILE = CONTAINERS_DIR / "lambda-base.Containerfile"
ENTRYPOINT_SCRIPT = CONTAINERS_DIR / "lambda-entrypoint.sh"
RUNTIME_REQUIREMENTS = CONTAINERS_DIR / "lambda-runtime.txt"
SERVING_DOCKERFILE = REPO_ROOT / "serving" / "Dockerfile"

BUILDER_VERSION = 1  # bump when a step changes in a way the inputs below do not show
SUITE = "bookworm"
VARIANT = "minbase"
# python-is-python3: `python` as k8s/deployment.yaml runs it; python3-pip: the Dockerfile's pip step.
PACKAGES = ("python3", "python-is-python3", "python3-pip")
RIE_MODULE = "github.com/aws/aws-lambda-runtime-interface-emulator"
RIE_VERSION = "v0.0.0-20261030222936-bef5c4ba774d"
RIE_BUILD = {"CGO_ENABLED": "0", "flags": ["-trimpath", "-ldflags=-s -w"]}
BASE_NAME = "localhost/bank-lambda-base"
ROOTFS_NAME = "localhost/bank-debian-rootfs"
SERVING_NAME = "localhost/bank-serving"
HASH_LABEL = "org.bank-ml.lambda-base.inputs"
# Left out of the rootfs: caches and files podman mounts over (resolv.conf, hostname: the build host's).
ROOTFS_REMOVE = ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*", "var/log/*.log",
                 "var/log/apt/*", "etc/resolv.conf", "etc/hostname")  # fmt: skip


HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def ca_mount() -> list[str]:
    """``--volume`` of the host's CA bundle over the image's during RUN steps (not kept in the image).

    Egress from these machines to PyPI passes a TLS proxy whose CA only the host
    trusts (it is in the host's bundle, not in Debian's ca-certificates); Debian's
    pip reads /etc/ssl/certs/ca-certificates.crt. Elsewhere the host's bundle is
    just the usual one.
    """
    return ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"] if HOST_CA_BUNDLE.is_file() else []


class BuildError(RuntimeError):
    """A build step failed; the message names the step and the tool's last words."""


# -- inputs -------------------------------------------------------------------


def rootfs_inputs() -> dict[str, object]:
    """What decides the debootstrap rootfs."""
    return {"builder": BUILDER_VERSION, "suite": SUITE, "variant": VARIANT, "packages": sorted(PACKAGES)}


def inputs() -> dict[str, object]:
    """Everything that decides the base image (the rootfs's inputs included)."""
    return {
        "rootfs": rootfs_inputs(),
        "runtime_requirements": RUNTIME_REQUIREMENTS.read_text(),
        "rie": {"module": RIE_MODULE, "version": RIE_VERSION, "build": RIE_BUILD},
        "entrypoint": ENTRYPOINT_SCRIPT.read_text(),
        "containerfile": CONTAINERFILE.read_text(),
    }


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def inputs_hash() -> str:
    """sha256 (hex) of ``inputs()``: the base image's cache key."""
    return _digest(inputs())


def rootfs_hash() -> str:
    return _digest(rootfs_inputs())


def base_ref(digest: str | None = None) -> str:
    """``localhost/bank-lambda-base:<hash12>`` for the current inputs (or ``digest``)."""
    return f"{BASE_NAME}:{(digest or inputs_hash())[:12]}"


def cached_base(store: pm.Store | None = None) -> str | None:
    """The base image's reference if the store holds it for the current inputs, else None (never builds)."""
    digest = inputs_hash()
    ref = base_ref(digest)
    if not pm.image_exists(ref, store):
        return None
    labels = pm.image_inspect(ref, store).get("Labels") or {}
    return ref if isinstance(labels, dict) and labels.get(HASH_LABEL) == digest else None


# -- steps --------------------------------------------------------------------


def debian_mirror() -> str:
    """``$BANK_DEBIAN_MIRROR``, else the mirror apt uses for bookworm (from /etc/apt)."""
    if os.environ.get("BANK_DEBIAN_MIRROR"):
        return os.environ["BANK_DEBIAN_MIRROR"]
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:  # deb822: stanzas of "Key: value" lines
        for stanza in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, flags=re.M))
            if SUITE in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                return fields["URIs"].split()[0]
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                    return parts[1]
    return "http://deb.debian.org/debian"


def _run(step: str, cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> None:
    """Run one build step; BuildError with the end of its output if it fails."""
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, check=False)
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    if log is not None:
        log.write_text(output)
    if proc.returncode != 0:
        raise BuildError(f"{step}: `{' '.join(cmd)}` exited {proc.returncode}:\n{output[-3000:]}")


def build_rootfs_tar(cache: Path, mirror: str) -> Path:
    """debootstrap the rootfs into a temporary directory and keep it as ``rootfs-<hash12>.tar``."""
    tarball = cache / "lambda-base" / f"rootfs-{rootfs_hash()[:12]}.tar"
    if tarball.exists():
        return tarball
    if os.geteuid() != 0:
        raise BuildError("debootstrap needs root (it creates device nodes and chroots)")
    exe = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if exe is None:
        raise BuildError("debootstrap is not installed: `apt-get install -y debootstrap`")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        _run(
            "debootstrap",
            [exe, f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}", SUITE, str(root), mirror],
            log=tarball.parent / "debootstrap.log",
        )
        for pattern in ROOTFS_REMOVE:
            for path in root.glob(pattern):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        partial = tarball.with_suffix(".tar.partial")
        # Numeric owners, sorted names: the tarball does not depend on this host's users or readdir order.
        _run("tar", ["tar", "-C", str(root), "--numeric-owner", "--sort=name", "-cf", str(partial), "."])
        os.replace(partial, tarball)
    return tarball


def go_binary() -> str:
    """The go command (PATH, else /usr/local/go/bin/go)."""
    exe = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if exe is None:
        raise BuildError(
            "the RIE is built from its Go module, and no `go` command was found: install Go >= 1.21 "
            "(https://go.dev/dl; it fetches the 1.26.6 toolchain the RIE's go.mod asks for from the Go module proxy)"
        )
    return exe


def build_rie(cache: Path) -> Path:
    """``go install <RIE>/cmd/aws-lambda-rie@<version>`` into ``rie/<version>/`` (once); its path."""
    bindir = cache / "rie" / RIE_VERSION
    binary = bindir / "aws-lambda-rie"
    if binary.exists():
        return binary
    bindir.mkdir(parents=True, exist_ok=True)
    # GOTOOLCHAIN=auto: a Go older than the RIE's go.mod (1.26.6) fetches that toolchain from the module proxy.
    env = {"GOBIN": str(bindir), "CGO_ENABLED": str(RIE_BUILD["CGO_ENABLED"]), "GOFLAGS": "", "GOTOOLCHAIN": "auto"}
    flags = [str(flag) for flag in RIE_BUILD["flags"]]  # type: ignore[attr-defined]
    _run("go install (RIE)", [go_binary(), "install", *flags, f"{RIE_MODULE}/cmd/aws-lambda-rie@{RIE_VERSION}"], env)
    return binary


@dataclass
class BuildReport:
    """What ``build_base`` did and how long each step took (seconds)."""

    ref: str
    inputs_hash: str
    cached: bool
    steps: dict[str, float] = field(default_factory=dict)
    size_bytes: int = 0
    pushed: str | None = None  # HOST:PORT/REPO@sha256:... when pushed

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _timed(report: BuildReport, step: str, started: float) -> None:
    report.steps[step] = round(time.monotonic() - started, 2)


def build_base(
    store: pm.Store | None = None, cache: Path | None = None, mirror: str | None = None, force: bool = False
) -> BuildReport:
    """Build the base image for the current inputs unless the store has it; tag it ``:latest`` too."""
    store = store or pm.default_store()
    cache = cache or cache_dir()
    digest = inputs_hash()
    ref = base_ref(digest)
    started = time.monotonic()
    report = BuildReport(ref=ref, inputs_hash=digest, cached=False)
    if not force and cached_base(store) == ref:
        report.cached = True
        _timed(report, "total", started)
        report.size_bytes = int(pm.image_inspect(ref, store).get("Size") or 0)  # type: ignore[call-overload]
        return report
    rootfs_ref = f"{ROOTFS_NAME}:{rootfs_hash()[:12]}"
    if force or not pm.image_exists(rootfs_ref, store):
        step = time.monotonic()
        if force:
            (cache / "lambda-base" / f"rootfs-{rootfs_hash()[:12]}.tar").unlink(missing_ok=True)
        tarball = build_rootfs_tar(cache, mirror or debian_mirror())
        _timed(report, "debootstrap+tar", step)
        step = time.monotonic()
        pm.podman("import", "--change", 'CMD ["/bin/sh"]', str(tarball), rootfs_ref, store=store, timeout=600)
        _timed(report, "podman import", step)
    step = time.monotonic()
    if force:
        shutil.rmtree(cache / "rie" / RIE_VERSION, ignore_errors=True)
    rie = build_rie(cache)
    _timed(report, "rie go install", step)
    step = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache, prefix="lambda-base-context-") as ctx:
        context = Path(ctx)
        for src in (CONTAINERFILE, RUNTIME_REQUIREMENTS, ENTRYPOINT_SCRIPT, rie):
            shutil.copy2(src, context / src.name)
        pm.podman(
            "build", "--network=host", "--pull=never", "--layers=false", *ca_mount(),
            "--build-arg", f"ROOTFS_IMAGE={rootfs_ref}",
            "--label", f"{HASH_LABEL}={digest}",
            "-f", str(context / CONTAINERFILE.name), "-t", ref, "-t", f"{BASE_NAME}:latest", str(context),
            store=store, timeout=1800,
        )  # fmt: skip
    _timed(report, "podman build (runtime)", step)
    _timed(report, "total", started)
    report.size_bytes = int(pm.image_inspect(ref, store).get("Size") or 0)  # type: ignore[call-overload]
    return report


def build_serving(
    base: str,
    tag: str = f"{SERVING_NAME}:latest",
    store: pm.Store | None = None,
    context: Path = REPO_ROOT,
    labels: dict[str, str] | None = None,
    extra_tags: list[str] | None = None,
) -> str:
    """``podman build`` of serving/Dockerfile FROM ``base`` (pip reaches PyPI: --network=host); the image id."""
    out = pm.podman(
        "build", "--network=host", "--pull=never", *ca_mount(), "--build-arg", f"BASE_IMAGE={base}",
        *[flag for key, value in (labels or {}).items() for flag in ("--label", f"{key}={value}")],
        "-f", str(SERVING_DOCKERFILE), "-t", tag, *[flag for t in extra_tags or [] for flag in ("-t", t)],
        "-q", str(context),
        store=store, timeout=1800,
    )  # fmt: skip
    return out.strip().splitlines()[-1]


SERVING_HASH_LABEL = "org.bank-ml.serving.inputs"


def serving_inputs(base: str, context: Path = REPO_ROOT) -> dict[str, object]:
    """What decides the serving image: the base, serving/Dockerfile, and every file its COPY steps take."""
    files = {
        "serving/Dockerfile": SERVING_DOCKERFILE,
        "serving/requirements.txt": context / "serving" / "requirements.txt",
    }
    for path in sorted((context / "serving" / "bank_serving").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            files[path.relative_to(context).as_posix()] = path
    return {
        "base": base,
        "files": {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()},
        "builder": BUILDER_VERSION,
    }


def serving_image(store: pm.Store | None = None, tag: str = f"{SERVING_NAME}:latest") -> str:
    """serving/Dockerfile built on the local Lambda base, each rebuilt only when its inputs changed; its reference.

    Both are found by a content hash first (the base's inputs, then the
    Dockerfile, requirements and serving code on that base): an unchanged
    checkout costs two image lookups, a fraction of a second. The result is
    ``localhost/bank-serving:<hash12>``, also tagged ``tag``.
    """
    base = build_base(store).ref
    digest = _digest(serving_inputs(base))
    ref = f"{SERVING_NAME}:{digest[:12]}"
    if pm.image_exists(ref, store):
        labels = pm.image_inspect(ref, store).get("Labels") or {}
        if isinstance(labels, dict) and labels.get(SERVING_HASH_LABEL) == digest:
            pm.podman("tag", ref, tag, store=store)
            return ref
    build_serving(base, tag, store, labels={SERVING_HASH_LABEL: digest}, extra_tags=[ref])
    return ref


def push_serving(registry: str, repo: str, tag: str, store: pm.Store | None = None) -> str:
    """``serving_image()`` pushed to ``registry`` (``host:port``, plain http) as ``repo:tag``; ``host:port/repo@sha256:...``.

    What devstack's release uses as its serving base image (CI pushes the same
    build, FROM AWS's base, to ECR). A registry that has the layers costs 0.2 s.
    """
    return push(serving_image(store), f"{registry}/{repo}:{tag}", store)


MODEL_FILES = ("model.onnx", "model.json")


def model_image(
    serving: str,
    model_dir: Path,
    registry: str,
    repo: str = "bank-model",
    base_tag: str = "serving-base",
    tag: str | None = None,
    store: pm.Store | None = None,
) -> str:
    """The release's model image, made as the release DAG makes it, pulled into the store; its reference.

    Pushes ``serving`` to ``registry`` (``host:port``, plain http) as
    ``repo:base_tag``, appends the model layer (``/opt/ml/model/model.onnx`` and
    ``model.json`` of ``model_dir``) with ``bank_pipeline.utils.oci_image.append_layer``
    exactly as ``ModelImagePushOperator`` does, and pulls the result by digest:
    returns ``host:port/repo@sha256:...``.
    """
    push(serving, f"{registry}/{repo}:{base_tag}", store)
    files = {f"{oci_layer.MODEL_DIR}/{name}": (Path(model_dir) / name).read_bytes() for name in MODEL_FILES}
    layer = oci_layer.model_layer(files)
    version = json.loads(files[f"{oci_layer.MODEL_DIR}/model.json"]).get("version", "model")
    pushed = oci_image.append_layer(
        oci.RegistryClient(f"http://{registry}"), repo, base_tag, layer, tag=tag or str(version),
        env={"BANK_MODEL_DIR": "/" + oci_layer.MODEL_DIR},
    )  # fmt: skip
    ref = f"{registry}/{repo}@{pushed.digest}"
    pm.podman("pull", "--tls-verify=false", "-q", ref, store=store, timeout=600)
    return ref


# -- CLI ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.containers.lambda_image", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="build the base image unless cached; print a JSON report")
    build.add_argument("--push", metavar="HOST:PORT/REPO:TAG", help="then push it there (--tls-verify=false)")
    build.add_argument("--mirror", help="Debian mirror for debootstrap (default: apt's)")
    build.add_argument("--force", action="store_true", help="rebuild every step, ignoring the caches")
    build.add_argument("--quiet", action="store_true", help="one line instead of the JSON report")
    sub.add_parser("hash", help="print the inputs hash")
    sub.add_parser("ref", help="print the cached base's reference; exit 1 if it is not built")
    serving = sub.add_parser("serving", help="build serving/Dockerfile on the base; print the image id")
    serving.add_argument("--base", help="base image (default: the cached local base)")
    serving.add_argument("--tag", default=f"{SERVING_NAME}:latest")
    serving.add_argument("--push", metavar="HOST:PORT/REPO:TAG", help="then push it there (--tls-verify=false)")
    args = parser.parse_args(argv)
    try:
        if args.action == "hash":
            print(inputs_hash())
        elif args.action == "ref":
            ref = cached_base()
            if ref is None:
                print(f"no base image for inputs {inputs_hash()[:12]}: python -m devstack.containers.lambda_image build",
                      file=sys.stderr)  # fmt: skip
                return 1
            print(ref)
        elif args.action == "build":
            report = build_base(mirror=args.mirror, force=args.force)
            if args.push:
                started = time.monotonic()
                report.pushed = push(report.ref, args.push)
                report.steps["push"] = round(time.monotonic() - started, 2)
            if args.quiet:
                how = (
                    "cached"
                    if report.cached
                    else "built (" + ", ".join(f"{k} {v}s" for k, v in report.steps.items()) + ")"
                )
                print(f"local Lambda base {report.ref}: {how}")
            else:
                print(json.dumps(report.as_dict(), indent=2))
        else:
            base = args.base or cached_base()
            if base is None:
                print("no local base image: python -m devstack.containers.lambda_image build", file=sys.stderr)
                return 1
            print(build_serving(base, args.tag))
            if args.push:
                print(push(args.tag, args.push))
    except (BuildError, pm.PodmanError, pm.PodmanUnavailable) as exc:
        print(f"devstack.containers.lambda_image: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
