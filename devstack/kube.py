"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok, all built from Go modules by ``devstack/kube/build.sh``.

kwok (``sigs.k8s.io/kwok``) plays the kubelets: it keeps the fake Nodes this module
creates Ready (with node leases) and moves pods scheduled onto them through the stages
of their lifecycle (Pending -> Running + Ready, completion, deletion). Stages are
``Stage`` objects in the API (kwok runs with ``--enable-crds=Stage``): the default ones
that kwokctl also uses are created at start from the files the build copied next to the
binaries, and a test can add its own at any time with ``KubeCluster.add_stage`` (a
``weight`` above 0 beats the default stages, whose weight is 0).

Everything listens on 127.0.0.1 only, on free ports picked at start. Every process
runs in its own session and process group; ``stop()`` SIGTERMs each group, SIGKILLs
what is left after a grace period and leaves no process behind. The state directory
holds the PKI (a CA, serving and client certificates, the service-account key pair,
made once), etcd's data (kept across restarts unless ``reset=True``), one log per
process, ``kubeconfig`` (admin, certificates embedded) and ``cluster.json``.

    with KubeCluster(Path("build/kube")) as kc:
        kc.kubeconfig, kc.server, kc.version["gitVersion"]

CLI: ``python -m devstack.kube up|down|status [--state-dir DIR]``.

Faithful: the real API server (validation, RBAC, admission, watch, server-side apply),
the real deployment/replicaset/garbage-collector/... controllers and scheduler.
Not faithful: no kubelet, container runtime, network or DNS: pods never run anything;
their status is what kwok's stages write. No cloud controller, no CSI, no kube-proxy.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from devstack import procs
from devstack.cache import cache_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
KUBE_SRC = REPO_ROOT / "devstack" / "kube"
DEFAULT_STATE_DIR = REPO_ROOT / "build" / "kube"
# The least-privilege identity of the release (package data of bank_pipeline, read from the
# checkout: devstack does not import the pipeline's packages).
RELEASE_RBAC_DIR = REPO_ROOT / "plugins" / "bank_pipeline" / "manifests" / "rbac"
RELEASE_IDENTITY = "bank-model-release"  # the ServiceAccount in RELEASE_RBAC_DIR
FIELD_MANAGER = "devstack"
STATE_FILE = "cluster.json"
# Every binary build.sh puts into the bin directory; kwok.d/ holds kwok's manifests.
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CIDR = "10.96.0.0/16"  # never routed: there is no kube-proxy; only API objects
POD_CIDR = "10.244.0.0/16"  # kwok hands pod IPs out of this; nothing listens there
NODE_ANNOTATION = "kwok.x-k8s.io/node"
# The controllers that Deployments, Jobs, Services, HPAs, PDBs, namespaces and RBAC's
# aggregated roles (admin, edit, view) need, and the node lifecycle controller, which
# lifts the not-ready taint (put on every new Node by the TaintNodesByCondition
# admission plugin) once kwok reports the Node Ready. Names as in 1.36's --help.
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "disruption-controller",
    "horizontal-pod-autoscaler-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "service-cidr-controller",
    "node-lifecycle-controller",
    "pod-garbage-collector-controller",
    "resourcequota-controller",
)
START_TIMEOUT = 180.0  # a cold start on a loaded 2-core machine takes well under a minute
STOP_GRACE = 10.0  # the API server drains requests on SIGTERM; etcd closes cleanly
# Stopping order: the clients of the API server first, etcd last.
STOP_ORDER = ("view", "kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")

__all__ = [
    "KubeCluster",
    "KubeError",
    "kube_version",
    "default_bin_dir",
    "missing_binaries",
    "image_pull_backoff_stage",
    "release_rbac",
    "airflow_connection",
    "running",
    "start_in_background",
    "DEFAULT_STATE_DIR",
]


class KubeError(RuntimeError):
    """The control plane could not be started, reached or stopped."""


# -- where the binaries are ----------------------------------------------------


def kube_version() -> str:
    """The k8s.io/kubernetes version pinned in devstack/kube/go.mod (e.g. ``v1.36.3``)."""
    text = (KUBE_SRC / "go.mod").read_text()
    match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v\S+)", text, re.MULTILINE)
    if not match:
        raise KubeError(f"no k8s.io/kubernetes requirement in {KUBE_SRC / 'go.mod'}")
    return match.group(1)


def default_bin_dir() -> Path:
    """Where build.sh puts the binaries: $BANK_KUBE_BIN_DIR, else
    ``${BANK_CACHE_DIR:-~/.cache/bank-ml}/kube/<k8s version>/bin``."""
    if os.environ.get("BANK_KUBE_BIN_DIR"):
        return Path(os.environ["BANK_KUBE_BIN_DIR"])
    return cache_dir() / "kube" / kube_version() / "bin"


def missing_binaries(bin_dir: Path | None = None) -> list[str]:
    """The binaries (and kwok manifests) not in ``bin_dir``; empty when all were built."""
    bin_dir = bin_dir or default_bin_dir()
    missing = [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if not (bin_dir / "kwok.d" / "stage-crd.yaml").is_file():
        missing.append("kwok.d/stage-crd.yaml")
    return missing


# -- PKI -------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _ensure_pki(pki: Path) -> None:
    """A CA and what the cluster needs from it, made once per state directory."""
    names = (
        "ca",
        "apiserver",
        "serving",
        "admin",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    )
    if all((pki / f"{n}.crt").is_file() and (pki / f"{n}.key").is_file() for n in names) and (pki / "sa.pub").is_file():
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    years = datetime.timedelta(days=3650)

    def key_pem(key: Any) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("bank-ml devstack kube CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + years)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(
        file: str,
        subject: x509.Name,
        usage: Any,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + years)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_encipherment=False,
                    content_commitment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if dns or ips:
            sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_private(pki / f"{file}.key", key_pem(key))
        (pki / f"{file}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))  # the `kubernetes` Service
    issue(
        "apiserver",
        name("kube-apiserver"),
        server,
        dns=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ips=("127.0.0.1", service_ip),
    )
    # The controller manager's and the scheduler's own HTTPS (healthz) endpoints.
    issue("serving", name("devstack-kube-components"), server, dns=("localhost",), ips=("127.0.0.1",))
    issue("admin", name("kubernetes-admin", "system:masters"), client)
    # Default RBAC binds these user names (system:kube-controller-manager/-scheduler).
    issue("kube-controller-manager", name("system:kube-controller-manager"), client)
    issue("kube-scheduler", name("system:kube-scheduler"), client)
    # kwok updates nodes, pods, leases, and impersonates for some stages: cluster admin.
    issue("kwok", name("kwok-controller", "system:masters"), client)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(pki / "sa.key", key_pem(sa_key))
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    _write_private(pki / "ca.key", key_pem(ca_key))
    # The CA certificate last: its presence with the others marks the PKI complete.
    (pki / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))


def _kubeconfig(server: str, pki: Path, user: str) -> dict[str, Any]:
    """A kubeconfig (JSON is YAML) with the CA and the user's certificate embedded."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "devstack",
                "cluster": {"server": server, "certificate-authority-data": b64(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pki / f"{user}.crt"),
                    "client-key-data": b64(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "devstack", "context": {"cluster": "devstack", "user": user}}],
        "current-context": "devstack",
    }


def _write_json(path: Path, data: Any, private: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    text = (json.dumps(data, indent=2) + "\n").encode()
    if private:
        _write_private(tmp, text)
    else:
        tmp.write_bytes(text)
    os.replace(tmp, path)


# -- processes ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (VmRSS from /proc), or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def _is_ours(pid: int, binary: str) -> bool:
    """The pid is alive and still runs ``binary`` (not a reused pid)."""
    cmd = procs.cmdline(pid)
    return procs.alive(pid) and bool(cmd) and cmd[0] == binary


def _etcd_version(etcd: Path) -> tuple[int, int]:
    out = subprocess.run([str(etcd), "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"etcd Version: (\d+)\.(\d+)", out)
    if not match:
        raise KubeError(f"cannot tell the version of {etcd}: {out!r}")
    return int(match.group(1)), int(match.group(2))


class KubeCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1.

    ``state_dir`` None means a temporary directory, removed by ``stop()``. ``nodes`` fake
    Nodes (``kwok-node-0``...) are created and kept Ready by kwok. ``etcd_binary``
    overrides the built etcd (e.g. Debian's ``/usr/bin/etcd``). ``reset`` wipes the
    etcd data of an earlier run first.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        bin_dir: Path | None = None,
        etcd_binary: Path | None = None,
        nodes: int = 2,
        reset: bool = False,
        view: bool = False,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self._temporary = state_dir is None
        # A temporary state directory is only named here: start() makes it, stop() removes it.
        temporary = Path(tempfile.gettempdir()) / f"bank-kube-{uuid.uuid4().hex[:12]}"
        self.state_dir = Path(state_dir) if state_dir else temporary
        self.bin_dir = Path(bin_dir) if bin_dir else default_bin_dir()
        self.etcd_binary = Path(etcd_binary) if etcd_binary else self.bin_dir / "etcd"
        self.nodes = nodes
        self.reset = reset
        self.view = view
        self.view_url = ""
        self.start_timeout = start_timeout
        self.pki = self.state_dir / "pki"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.logs = self.state_dir / "logs"
        self.ports: dict[str, int] = {}
        self.server = ""
        self.version: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._binaries: dict[str, str] = {}
        self._ssl: ssl.SSLContext | None = None
        self._t0 = time.monotonic()

    @classmethod
    def attach(cls, state_dir: Path) -> KubeCluster:
        """API access (as admin) to the cluster another object or process started in ``state_dir``;
        ``stop()`` on it stops that cluster too."""
        state = running(state_dir)
        if state is None:
            raise KubeError(f"no running cluster recorded in {state_dir}")
        cluster = cls(state_dir)
        cluster.server, cluster.view_url, cluster.ports = state["server"], state.get("view_url", ""), state["ports"]
        cluster.version = cluster.get("/version")
        return cluster

    # -- context manager --

    def __enter__(self) -> KubeCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start --

    def start(self) -> KubeCluster:
        """Start every component and return when the cluster can run a Deployment:
        API ready, controllers and scheduler healthy, every Node Ready and schedulable."""
        missing = [m for m in missing_binaries(self.bin_dir) if m != "etcd"]
        if not os.access(self.etcd_binary, os.X_OK):
            missing.append(str(self.etcd_binary))
        if missing:
            raise KubeError(
                f"not built in {self.bin_dir}: {', '.join(missing)}; run `make kube` (devstack/kube/build.sh)"
            )
        t0 = self._t0 = time.monotonic()
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=not self._temporary)
        stop_recorded(self.state_dir)  # a cluster an earlier run left behind
        self.logs.mkdir(exist_ok=True)
        if self.reset:
            shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)
        _ensure_pki(self.pki)
        self.timings["pki"] = round(time.monotonic() - t0, 3)
        self.ports = {
            "etcd": _free_port(),
            "etcd-peer": _free_port(),
            "apiserver": _free_port(),
            "controller-manager": _free_port(),
            "scheduler": _free_port(),
            **({"view": _free_port()} if self.view else {}),
        }
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        for user in ("admin", "kube-controller-manager", "kube-scheduler", "kwok"):
            path = self.kubeconfig if user == "admin" else self.pki / f"{user}.kubeconfig"
            _write_json(path, _kubeconfig(self.server, self.pki, user), private=True)
        try:
            self._start_etcd()
            self._wait("etcd /health", self._etcd_healthy)
            self._start_apiserver()
            self._wait("kube-apiserver /readyz", lambda: self._get_status("/readyz") == 200)
            self._start_controller_manager()
            self._start_scheduler()
            self._install_kwok_stages()
            self._create_nodes()
            self._start_kwok()
            if self.view:
                self._start_view()
            self._write_state()
            self._wait("kube-controller-manager /healthz", lambda: self._component_healthy("controller-manager"))
            self._wait("kube-scheduler /healthz", lambda: self._component_healthy("scheduler"))
            self._wait(f"{self.nodes} kwok Node(s) Ready and untainted", self._nodes_ready)
            default_sa = "/api/v1/namespaces/default/serviceaccounts/default"
            self._wait("ServiceAccount default/default", lambda: self._get_status(default_sa) == 200)
            self.version = self.get("/version")
        except BaseException as exc:
            # A temporary state directory goes with stop(): keep what its logs said.
            tails = (
                "".join(f"\n--- {name}.log ---\n{self.log_tail(name, 15)}" for name in self._procs)
                if self._temporary
                else ""
            )
            self.stop()
            if tails and isinstance(exc, Exception):
                raise KubeError(f"{exc}{tails}") from exc
            raise
        self.timings["ready"] = round(time.monotonic() - t0, 3)
        self._write_state()
        return self

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd or self.state_dir,
                env=env,
                start_new_session=True,  # own session and process group
            )
        finally:
            log.close()
        self._procs[name] = proc
        self._binaries[name] = argv[0]
        self._write_state()

    def _start_etcd(self) -> None:
        etcd = str(self.etcd_binary)
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        argv = [
            etcd,
            "--name=devstack",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=devstack={peer}",
            "--log-level=warn",
        ]
        major, minor = _etcd_version(self.etcd_binary)
        if (major, minor) < (3, 5):
            argv.append("--logger=zap")  # 3.4 defaults to the deprecated capnslog
        else:
            # A throwaway local store: skip fsync (etcd's own flag for tests and dev).
            argv.append("--unsafe-no-fsync")
        self._spawn("etcd", argv)

    def _start_apiserver(self) -> None:
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                "--advertise-address=127.0.0.1",
                # The endpoints of Service `kubernetes` would be 127.0.0.1, which Endpoints
                # validation refuses: no reconciler (nothing in-cluster dials it here).
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.state_dir / 'apiserver'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                # Published in kube-system/extension-apiserver-authentication, which the
                # controller manager and scheduler read (they log errors every few seconds
                # without it). No front proxy exists: allowed-names matches no certificate.
                f"--requestheader-client-ca-file={pki / 'ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--profiling=false",
            ],
        )

    def _component_flags(self, name: str, user: str) -> list[str]:
        kubeconfig = self.pki / f"{user}.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--client-ca-file={self.pki / 'ca.crt'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports[name]}",
            f"--tls-cert-file={self.pki / 'serving.crt'}",
            f"--tls-private-key-file={self.pki / 'serving.key'}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _start_controller_manager(self) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                *self._component_flags("controller-manager", "kube-controller-manager"),
                f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.pki / 'sa.key'}",
                f"--root-ca-file={self.pki / 'ca.crt'}",
                # Lift the not-ready taint soon after kwok marks a new Node Ready.
                "--node-monitor-period=1s",
            ],
        )

    def _start_scheduler(self) -> None:
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                *self._component_flags("scheduler", "kube-scheduler"),
            ],
        )

    def _start_kwok(self) -> None:
        # kwok reads ~/.kwok/kwok.yaml if there is one: give it a home of its own.
        home = self.state_dir / "kwok-home"
        home.mkdir(exist_ok=True)
        env = {**os.environ, "HOME": str(home), "KWOK_WORKDIR": str(home / ".kwok")}
        self._spawn(
            "kwok",
            [
                str(self.bin_dir / "kwok"),
                f"--kubeconfig={self.pki / 'kwok.kubeconfig'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
                "--enable-crds=Stage",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
            ],
            env=env,
        )

    def _start_view(self) -> None:
        """devstack.kube_view: the read-only page per Deployment that links point at (make up)."""
        self.view_url = f"http://127.0.0.1:{self.ports['view']}"
        self._spawn(
            "view",
            [sys.executable, "-m", "devstack.kube_view", "--server", self.server,
             "--state-dir", str(self.state_dir), "--port", str(self.ports["view"])],
            cwd=REPO_ROOT,  # `python -m devstack...` imports devstack from the checkout
        )  # fmt: skip
        self._wait("the view answers", lambda: _http_ok(self.view_url + "/"))

    def _install_kwok_stages(self) -> None:
        """kwok's Stage CRD, then its default node and pod stages (kwokctl's defaults:
        node-initialize, node-heartbeat-with-lease, pod-ready, pod-complete, pod-delete)."""
        kwok_d = self.bin_dir / "kwok.d"
        crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        self.create(crd_path, (kwok_d / "stage-crd.yaml").read_text(), exist_ok=True)
        crd = f"{crd_path}/stages.kwok.x-k8s.io"
        self._wait("Stage CRD established", lambda: _condition(self.get(crd), "Established"))
        self._wait(
            "Stage API served",
            lambda: self._get_status("/apis/kwok.x-k8s.io/v1alpha1/stages") == 200,
        )
        for path in sorted((kwok_d / "stages").glob("*.yaml")):
            for doc in re.split(r"^---\s*$", path.read_text(), flags=re.MULTILINE):
                if doc.strip():
                    self.create("/apis/kwok.x-k8s.io/v1alpha1/stages", doc, exist_ok=True)

    def _create_nodes(self) -> None:
        for i in range(self.nodes):
            node = f"kwok-node-{i}"
            self.create(
                "/api/v1/nodes",
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": node,
                        "annotations": {NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                        "labels": {
                            "kubernetes.io/hostname": node,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                        },
                    },
                    "spec": {},
                },
                exist_ok=True,
            )

    # -- readiness --

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float | None = None) -> None:
        """Poll ``ready`` until true; fail at once if a started process died."""
        deadline = self._t0 + (timeout or self.start_timeout)  # one budget for all of start()
        delay = 0.05
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise KubeError(
                        f"{name} exited with {proc.returncode} while waiting for {what}:\n{self.log_tail(name)}"
                    )
            try:
                if ready():
                    self.timings[what] = round(time.monotonic() - self._t0, 3)
                    return
            except (OSError, urllib.error.URLError, KubeError, ValueError):
                pass
            if time.monotonic() > deadline:
                elapsed = time.monotonic() - self._t0
                raise KubeError(f"timed out after {elapsed:.0f} s waiting for {what}; logs in {self.logs}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _etcd_healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.ports['etcd']}/health"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read()).get("health") == "true"

    def _component_healthy(self, name: str) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        url = f"https://127.0.0.1:{self.ports[name]}/healthz"
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return resp.status == 200

    def _nodes_ready(self) -> bool:
        items = self.get("/api/v1/nodes?labelSelector=type%3Dkwok")["items"]
        ready = [
            n
            for n in items
            if _condition(n, "Ready")
            and not any(t.get("key") == "node.kubernetes.io/not-ready" for t in n["spec"].get("taints", []))
        ]
        return len(ready) >= self.nodes

    # -- API access (admin) --

    def ssl_context(self) -> ssl.SSLContext:
        """TLS for the API server as the admin user (system:masters)."""
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
            ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
            self._ssl = ctx
        return self._ssl

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | str | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """One API call as admin: (HTTP status, decoded JSON body or text). ``body`` is a
        dict (sent as JSON) or YAML/JSON text (the API server accepts application/yaml)."""
        data = None
        if body is not None:
            if isinstance(body, str):
                data = body.encode()
                if content_type == "application/json":
                    content_type = "application/yaml"
            else:
                data = json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        req.add_header("Accept", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def _get_status(self, path: str) -> int:
        return self.request("GET", path, timeout=5)[0]

    def get(self, path: str) -> Any:
        """GET ``path``; raise KubeError unless 200."""
        status, body = self.request("GET", path)
        if status != 200:
            raise KubeError(f"GET {path}: {status} {body}")
        return body

    def create(self, path: str, obj: dict[str, Any] | str, exist_ok: bool = False) -> Any:
        """POST an object (dict or YAML text) to a collection; 409 is fine with ``exist_ok``."""
        status, body = self.request("POST", path, obj)
        if status in (200, 201) or (status == 409 and exist_ok):
            return body
        raise KubeError(f"POST {path}: {status} {body}")

    def apply(self, manifest: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Create or update an object by server-side apply, as admin (idempotent): a Namespace,
        ServiceAccount, Role, RoleBinding or NetworkPolicy, in ``namespace`` unless cluster-scoped."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if kind not in _APPLY_PATHS:
            raise KubeError(f"apply: kind {kind!r} of {name!r} is not one of {', '.join(_APPLY_PATHS)}")
        prefix, plural, namespaced = _APPLY_PATHS[kind]
        if namespaced and not namespace:
            raise KubeError(f"apply: {kind} {name} needs a namespace")
        where = f"/namespaces/{namespace}" if namespaced else ""
        path = f"{prefix}{where}/{plural}/{name}?fieldManager={FIELD_MANAGER}&force=true"
        body = {**manifest, "metadata": {**manifest["metadata"], **({"namespace": namespace} if namespaced else {})}}
        status, answer = self.request("PATCH", path, json.dumps(body), content_type="application/apply-patch+yaml")
        if status not in (200, 201):
            raise KubeError(f"apply {kind} {name}: {status} {answer}")
        return answer

    def token_kubeconfig(self, namespace: str, service_account: str, seconds: int = 3600) -> dict[str, Any]:
        """A kubeconfig whose user is a fresh token of ``service_account`` (TokenRequest, valid
        ``seconds``), its context in ``namespace``: what a workload of that identity would use."""
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        }
        token = self.create(path, request)["status"]["token"]
        ca = base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()
        user = f"system:serviceaccount:{namespace}:{service_account}"
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "devstack", "cluster": {"server": self.server, "certificate-authority-data": ca}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": "devstack", "context": {"cluster": "devstack", "user": user, "namespace": namespace}}
            ],
            "current-context": "devstack",
        }

    def release_identity(
        self, namespace: str, rbac: Sequence[dict[str, Any]] | None = None, seconds: int = 3600
    ) -> dict[str, Any]:
        """The namespace, the release's ServiceAccount, Role and RoleBinding (and NetworkPolicy) in it
        (``rbac``, by default the package's manifests/rbac), and a kubeconfig with a token of that
        ServiceAccount: the operator then has exactly the Role's permissions."""
        manifests = list(rbac) if rbac is not None else release_rbac()
        accounts = [m["metadata"]["name"] for m in manifests if m["kind"] == "ServiceAccount"]
        if len(accounts) != 1:
            raise KubeError(f"the release's RBAC needs exactly one ServiceAccount, found {accounts}")
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for manifest in manifests:
            self.apply(manifest, namespace)
        return self.token_kubeconfig(namespace, accounts[0], seconds)

    def add_stage(self, stage: dict[str, Any] | str) -> Any:
        """Create or replace a kwok Stage (dict or YAML) by server-side apply. kwok picks
        it up from the API at once; among matching stages one of weight > 0 always wins
        over kwok's defaults (weight 0)."""
        if isinstance(stage, str):
            match = re.search(r"^metadata:\s*\n(?:[ \t]+.*\n)*?[ \t]+name:\s*['\"]?([\w.-]+)", stage, re.MULTILINE)
            if not match:
                raise KubeError("a Stage needs metadata.name")
            name = match.group(1)
        else:
            name = stage["metadata"]["name"]
            stage = json.dumps({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", **stage})
        path = f"/apis/kwok.x-k8s.io/v1alpha1/stages/{name}?fieldManager=devstack&force=true"
        status, body = self.request("PATCH", path, stage, content_type="application/apply-patch+yaml")
        if status not in (200, 201):
            raise KubeError(f"apply Stage {name}: {status} {body}")
        return body

    # -- bookkeeping --

    def pids(self) -> dict[str, int]:
        """Process id of each component started by this object."""
        return {name: proc.pid for name, proc in self._procs.items()}

    def rss(self) -> dict[str, int | None]:
        """Resident memory (bytes) of each component, from /proc."""
        return {name: rss_bytes(pid) for name, pid in self.pids().items()}

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The last lines of a component's log."""
        try:
            return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def _write_state(self) -> None:
        _write_json(
            self.state_dir / STATE_FILE,
            {
                "server": self.server,
                "view_url": self.view_url,
                "kubeconfig": str(self.kubeconfig),
                "ports": self.ports,
                "version": self.version.get("gitVersion", ""),
                "timings": self.timings,
                "processes": {
                    name: {"pid": proc.pid, "binary": self._binaries[name]} for name, proc in self._procs.items()
                },
            },
        )

    # -- stop --

    def stop(self) -> None:
        """Stop every component (clients first, etcd last): SIGTERM to its process group,
        SIGKILL after a grace period. Removes the state directory if it was temporary."""
        groups = [[n for n in STOP_ORDER[:4] if n in self._procs], ["kube-apiserver"], ["etcd"]]
        for group in groups:
            live = [self._procs[n] for n in group if n in self._procs]
            for proc in live:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            for proc in live:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            for proc in live:
                # Whatever is left of the group (the component or anything it started).
                if procs.group_pids(proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._procs.clear()
        stop_recorded(self.state_dir)  # processes recorded by another object (e.g. the CLI)
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        if self._temporary:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def image_pull_backoff_stage(image: str, name: str | None = None) -> dict[str, Any]:
    """A kwok Stage that keeps every pod with a container of ``image`` Pending, its
    containers waiting in ImagePullBackOff, as a kubelet does when a pull fails. Its name
    (default: from the image) is cluster-wide: one stage per image.

    Weight 1 makes it win over kwok's pod-ready (weight 0) for those pods. Its status
    has no timestamps, so applying it again changes nothing and kwok stops there. Like
    the kubelet, it records a Warning event ``Failed`` on the pod (once: kwok applies a
    stage once), which says that a stage, not a registry, refused the image.
    """
    name = name or f"pod-image-pull-backoff-{hashlib.sha256(image.encode()).hexdigest()[:12]}"
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {
                "matchExpressions": [
                    {"cel": {"expression": "!has(self.metadata.deletionTimestamp)"}},
                    {"cel": {"expression": f"self.spec.containers.exists(c, c.image == {json.dumps(image)})"}},
                ]
            },
            "weight": 1,
            "next": {
                "event": {
                    "type": "Warning",
                    "reason": "Failed",
                    "message": f"Failed to pull image {json.dumps(image)}: kwok stage {name} makes this image unpullable",
                },
                "statusTemplate": """\
conditions:
- type: Initialized
  status: "True"
- type: Ready
  status: "False"
  reason: ContainersNotReady
- type: ContainersReady
  status: "False"
  reason: ContainersNotReady
- type: PodScheduled
  status: "True"
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  started: false
  restartCount: 0
  state:
    waiting:
      reason: ImagePullBackOff
      message: {{ printf "Back-off pulling image %q" .image | Quote }}
{{ end }}
phase: Pending
""",
            },
        },
    }


# What apply() can write: API path prefix, resource, namespaced.
_APPLY_PATHS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    # rbac/networkpolicy.yaml: accepted and validated by the API server, never enforced (no CNI here).
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
}


def release_rbac(directory: Path = RELEASE_RBAC_DIR) -> list[dict[str, Any]]:
    """What the namespace's administrator applies for the release (bank_pipeline/manifests/rbac:
    ServiceAccount, Role, RoleBinding, the model pods' NetworkPolicy), as dicts."""
    import yaml

    docs = [doc for f in sorted(directory.glob("*.yaml")) for doc in yaml.safe_load_all(f.read_text()) if doc]
    if not docs:
        raise KubeError(f"no RBAC manifests in {directory}")
    return docs


def airflow_connection(kubeconfig: dict[str, Any], namespace: str) -> str:
    """An AIRFLOW_CONN_* value (JSON) for the cncf-kubernetes provider's hooks: the kubeconfig
    inline (the hooks write it to a file of their own) and the namespace."""
    return json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": kubeconfig, "namespace": namespace}})


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def _condition(obj: dict[str, Any], kind: str) -> bool:
    conditions = obj.get("status", {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """cluster.json of a state directory, or None."""
    try:
        return json.loads((Path(state_dir) / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def start_in_background(cluster: KubeCluster) -> Callable[[], KubeCluster]:
    """Start ``cluster`` in a thread (start() mostly waits on its processes), so that other
    work overlaps its ~7 s; the function returned waits for it and returns it, or raises what
    start() raised. Call it before stopping the cluster, also when other work failed."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            cluster.start()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by join()
            failure.append(exc)

    thread = threading.Thread(target=run, name="kube-start", daemon=True)
    thread.start()

    def join() -> KubeCluster:
        thread.join()
        if failure:
            raise failure[0]
        return cluster

    return join


def running(state_dir: Path) -> dict[str, Any] | None:
    """cluster.json of a state directory if every process it records still runs, else None."""
    state = read_state(state_dir)
    if not state or not state.get("processes"):
        return None
    if all(_is_ours(info["pid"], info["binary"]) for info in state["processes"].values()):
        return state
    return None


def stop_recorded(state_dir: Path) -> list[str]:
    """Stop the processes recorded in ``state_dir``/cluster.json that still run their
    binary (clients first, etcd last); return the names of those it stopped."""
    state = read_state(state_dir)
    if not state:
        return []
    stopped = []
    for name in STOP_ORDER:
        info = state.get("processes", {}).get(name)
        if info and _is_ours(info["pid"], info["binary"]):
            procs.terminate_group(info["pid"], grace=STOP_GRACE)
            stopped.append(name)
    (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)
    return stopped


# -- CLI -----------------------------------------------------------------------------


def _status(state_dir: Path) -> int:
    state = read_state(state_dir)
    if not state:
        print(f"no cluster recorded in {state_dir}")
        return 1
    print(f"server      {state['server']}")
    print(f"kubeconfig  {state['kubeconfig']}")
    if state.get("view_url"):
        print(f"view        {state['view_url']}/")
    print(f"version     {state.get('version', '')}")
    alive = True
    for name, info in state["processes"].items():
        pid = info["pid"]
        ours = _is_ours(pid, info["binary"])
        alive &= ours
        rss = rss_bytes(pid) if ours else None
        mem = f"{rss / 2**20:7.1f} MiB" if rss else "      -"
        print(f"{name:24s} pid {pid:<8d} {'running' if ours else 'GONE   '} rss {mem}")
    print("ports       " + " ".join(f"{k}={v}" for k, v in state["ports"].items()))
    return 0 if alive else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m devstack.kube up|down|status [--state-dir DIR] [--nodes N]``."""
    parser = argparse.ArgumentParser(prog="python -m devstack.kube", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--nodes", type=int, default=2, help="fake kwok Nodes to create (up)")
    parser.add_argument("--etcd", type=Path, default=None, help="etcd binary to use instead of the built one")
    parser.add_argument("--reset", action="store_true", help="wipe etcd's data first (up)")
    parser.add_argument("--no-view", action="store_true", help="no read-only web view of the Deployments (up)")
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    if args.command == "down":
        stopped = stop_recorded(state_dir)
        print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
        return 0
    if args.command == "status":
        return _status(state_dir)
    cluster = KubeCluster(state_dir, nodes=args.nodes, etcd_binary=args.etcd, reset=args.reset, view=not args.no_view)
    try:
        cluster.start()
    except KubeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # The components run in their own sessions and outlive this process; `down` stops them.
    print(f"kube-apiserver {cluster.version.get('gitVersion')} listening on {cluster.server}")
    print(f"ready in {cluster.timings['ready']:.1f} s; logs in {cluster.logs}")
    if cluster.view_url:
        print(f"Deployments (read-only view): {cluster.view_url}/")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
