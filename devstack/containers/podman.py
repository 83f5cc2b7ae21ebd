"""podman for this project: its own settings, its own storage, and containers that clean up.

Every podman call of devstack and the tests runs with two variables:

- ``CONTAINERS_CONF`` = ``devstack/containers/containers.conf``: runc, lowered
  ulimits, the host's network namespace, cgroupfs, file events and file locks
  (what runs as root on these machines; see that file and README.md beside it);
- ``CONTAINERS_STORAGE_CONF`` = ``<cache>/containers/storage.conf``, written here:
  graphroot ``<cache>/containers/storage``, runroot ``<cache>/containers/run``,
  where ``<cache>`` is ``${BANK_CACHE_DIR:-$HOME/.cache/bank-ml}``.

So the project's images and containers never mix with the system's
(/var/lib/containers): ``podman images`` without the variables does not show
them, and deleting ``<cache>/containers`` forgets them all. libpod's per-boot
directory (tmp_dir, /run/libpod by default, shared by every store) is set to
``<cache>/containers/libpod`` once, when the store is created (``podman
--tmpdir``); podman records it in the store's database and uses it from then on,
also for a person who runs ``podman`` by hand with the two variables
(``python -m devstack.containers.podman env`` prints them). Locks are files under it
(``lock_type = "file"``), not the shared-memory segment the system's podman uses.

/run is not a tmpfs on these machines, so nothing clears the runroot and tmp_dir
at boot: ``prepare`` does, when the kernel's boot id differs from the one it
recorded, as a tmpfs would have.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from devstack.cache import cache_dir

CONTAINERS_CONF = Path(__file__).resolve().parent / "containers.conf"
DEBIAN_PACKAGES = ("podman", "runc")  # what the Makefile installs; as root on ext4 nothing else is used
LABEL = "org.bank-ml.devstack"  # on every container started through Container
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

STORAGE_CONF = """\
# Written by devstack.containers.podman: the project's own podman storage (not /var/lib/containers).
[storage]
driver = "overlay"
graphroot = "{graphroot}"
runroot = "{runroot}"
"""


class PodmanUnavailable(RuntimeError):
    """podman (or runc) is missing, or podman cannot run here."""


class PodmanError(RuntimeError):
    """A podman command failed: the message holds the command and podman's own words."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        self.args_ = list(args)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"podman {shlex.join(args)} exited {returncode}: {stderr.strip()[-2000:]}")


@dataclass(frozen=True)
class Store:
    """The project's podman storage under ``root`` (``<cache>/containers``)."""

    root: Path

    @property
    def storage_conf(self) -> Path:
        return self.root / "storage.conf"

    @property
    def graphroot(self) -> Path:
        return self.root / "storage"

    @property
    def runroot(self) -> Path:
        return self.root / "run"

    @property
    def tmpdir(self) -> Path:
        return self.root / "libpod"

    def env(self) -> dict[str, str]:
        """The two variables that select the project's settings and storage."""
        return {"CONTAINERS_CONF": str(CONTAINERS_CONF), "CONTAINERS_STORAGE_CONF": str(self.storage_conf)}


def default_store() -> Store:
    """The store under the cache directory (``BANK_CACHE_DIR`` or ~/.cache/bank-ml)."""
    return Store(cache_dir() / "containers")


def binary() -> str:
    """The path of podman, or PodmanUnavailable naming the Debian packages to install."""
    path = shutil.which("podman") or shutil.which("podman", path="/usr/bin")
    if path is None or not (shutil.which("runc") or shutil.which("runc", path="/usr/sbin:/usr/bin")):
        raise PodmanUnavailable(
            "podman and runc are not installed: `apt-get install -y " + " ".join(DEBIAN_PACKAGES) + "`"
        )
    return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(store: Store) -> Store:
    """Write storage.conf, clear per-boot state after a reboot, and create the store once."""
    with _locked(store.root / ".lock"):
        store.root.mkdir(parents=True, exist_ok=True)
        text = STORAGE_CONF.format(graphroot=store.graphroot, runroot=store.runroot)
        if not store.storage_conf.exists() or store.storage_conf.read_text() != text:
            store.storage_conf.write_text(text)
        boot_file = store.root / "boot_id"
        boot = BOOT_ID.read_text().strip()
        if boot_file.exists() and boot_file.read_text().strip() != boot:
            # What a tmpfs would have done at boot: no container runs, nothing is mounted.
            shutil.rmtree(store.runroot, ignore_errors=True)
            shutil.rmtree(store.tmpdir, ignore_errors=True)
        boot_file.write_text(boot + "\n")
        if not (store.graphroot / "libpod").exists():
            # Creating the store records tmp_dir in its database: later calls need no --tmpdir.
            _run_raw([binary(), "--tmpdir", str(store.tmpdir), "info", "--format", "{{.Store.GraphRoot}}"], store)
    return store


def _run_raw(
    cmd: Sequence[str], store: Store, input: bytes | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, **store.env()}
    # In the store's tmp dir: conmon writes an "oom" file into its working directory when the
    # kernel kills a container for memory, which left one at the repository's root.
    store.tmpdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        list(cmd), env=env, input=input, capture_output=True, timeout=timeout, check=False, cwd=store.tmpdir
    )
    if proc.returncode != 0:
        raise PodmanError(list(cmd[1:]), proc.returncode, proc.stderr.decode(errors="replace"))
    return proc


_PREPARED: set[Path] = set()


def _ensure(store: Store | None) -> Store:
    """``store`` (or the default one), prepared once per process."""
    store = store or default_store()
    if store.root not in _PREPARED:
        prepare(store)
        _PREPARED.add(store.root)
    return store


def podman(*args: str, store: Store | None = None, input: bytes | None = None, timeout: float | None = None) -> str:
    """Run ``podman ARGS`` with the project's settings and storage; return its stdout (PodmanError if it fails)."""
    store = _ensure(store)
    return _run_raw([binary(), *args], store, input=input, timeout=timeout).stdout.decode(errors="replace")


def unavailable_reason(store: Store | None = None) -> str | None:
    """None if podman can run a container here, else why not (for skip messages)."""
    try:
        binary()  # before anything is written under the cache directory
        podman("info", "--format", "{{.Host.OCIRuntime.Name}}", store=store, timeout=60)
    except (PodmanUnavailable, PodmanError, subprocess.TimeoutExpired, OSError) as exc:
        return str(exc)
    return None


def image_exists(ref: str, store: Store | None = None) -> bool:
    """True if the store holds the image ``ref``."""
    store = _ensure(store)
    proc = subprocess.run(
        [binary(), "image", "exists", ref], env={**os.environ, **store.env()}, capture_output=True, check=False
    )
    return proc.returncode == 0


def image_inspect(ref: str, store: Store | None = None) -> dict[str, object]:
    """``podman image inspect`` of one image (its first entry)."""
    return json.loads(podman("image", "inspect", ref, store=store))[0]


def wait_for_port(port: int, timeout: float, alive: Callable[[], bool] | None = None, host: str = "127.0.0.1") -> bool:
    """Poll until ``host:port`` accepts a connection (True) or ``timeout`` passes or ``alive()`` is False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            pass
        if alive is not None and not alive():
            return False
        time.sleep(0.01)
    return False


def containers(label_value: str | None = None, store: Store | None = None) -> list[str]:
    """Names of the containers (running or not) that Container started (with ``LABEL=label_value``, if given)."""
    selector = f"label={LABEL}" if label_value is None else f"label={LABEL}={label_value}"
    out = podman("ps", "-a", "--filter", selector, "--format", "{{.Names}}", store=store)
    return [line for line in out.splitlines() if line]


class Container:
    """One container started detached (``podman run -d``) and removed by ``remove`` / the context exit.

    ``options`` are podman run options (``--memory 512m``, ``--read-only``...),
    ``env`` becomes ``--env`` flags, ``command`` the arguments after the image.
    Every container carries the label ``org.bank-ml.devstack=<group>`` so a test
    can check that none is left behind.
    """

    def __init__(
        self,
        image: str,
        command: Sequence[str] = (),
        *,
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        group: str = "devstack",
        store: Store | None = None,
    ) -> None:
        self.image = image
        self.command = list(command)
        self.options = list(options)
        self.env = dict(env or {})
        self.group = group
        self.store = store or default_store()
        self.name = f"bank-{group}-{uuid.uuid4().hex[:10]}"
        self.id: str | None = None
        self.started_at = 0.0  # time.monotonic() just before `podman run`

    def start(self) -> Self:
        """``podman run -d``; returns once podman has started the container's process."""
        env_flags = [flag for key, value in sorted(self.env.items()) for flag in ("--env", f"{key}={value}")]
        self.started_at = time.monotonic()
        self.id = podman(
            "run", "-d", "--name", self.name, "--label", f"{LABEL}={self.group}",
            *env_flags, *self.options, self.image, *self.command,
            store=self.store,
        ).strip()  # fmt: skip
        return self

    def state(self) -> dict[str, object]:
        """The container's State from ``podman inspect`` (Running, ExitCode, OOMKilled...)."""
        return json.loads(podman("inspect", "--format", "{{json .State}}", self.name, store=self.store))

    def running(self) -> bool:
        try:
            return bool(self.state().get("Running"))
        except PodmanError:
            return False

    def logs(self) -> str:
        """stdout and stderr of the container so far."""
        try:
            proc = subprocess.run(
                [binary(), "logs", self.name], env={**os.environ, **self.store.env()},
                capture_output=True, check=False, timeout=30,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return "(podman logs timed out)"
        return (proc.stdout + proc.stderr).decode(errors="replace")

    def stop(self, timeout: int = 10) -> int:
        """``podman stop -t TIMEOUT`` (SIGTERM, SIGKILL after TIMEOUT s); return the exit code."""
        podman("stop", "-t", str(timeout), self.name, store=self.store, timeout=timeout + 60)
        return int(self.state()["ExitCode"])  # type: ignore[call-overload]

    def wait(self, timeout: float) -> int:
        """Poll until the container has exited; return its exit code (TimeoutError if it still runs)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if not state.get("Running") and state.get("Status") in ("exited", "stopped"):
                return int(state["ExitCode"])  # type: ignore[call-overload]
            time.sleep(0.05)
        raise TimeoutError(f"container {self.name} still runs after {timeout} s")

    def remove(self) -> None:
        """``podman rm -f`` (kills it if it still runs); no error if it is already gone."""
        if self.id is not None:
            podman("rm", "-f", "--ignore", "-t", "0", self.name, store=self.store, timeout=120)
            self.id = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()


def main(argv: list[str] | None = None) -> int:
    """``python -m devstack.containers.podman env|prepare|ls``: the project's podman settings for a shell."""
    parser = argparse.ArgumentParser(prog="python -m devstack.containers.podman", description=main.__doc__)
    parser.add_argument("action", choices=["env", "prepare", "ls"], help="env: print `export` lines for a shell")
    args = parser.parse_args(argv)
    store = default_store()
    try:
        prepare(store)
        if args.action == "env":
            for key, value in store.env().items():
                print(f"export {key}={shlex.quote(value)}")
        elif args.action == "ls":
            print(podman("ps", "-a", "--filter", f"label={LABEL}", store=store), end="")
        else:
            print(store.root)
    except (PodmanUnavailable, PodmanError) as exc:
        print(f"devstack.containers.podman: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
