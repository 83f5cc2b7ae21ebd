"""The cluster's PKI (a CA, serving and client certificates, the service-account key pair),
made once per state directory, and the kubeconfigs that embed it."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from devstack.kube.components import SERVICE_CIDR


def write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_pki(pki: Path) -> None:
    """A CA and what the cluster needs from it, made once per state directory."""
    names = (
        "ca",
        "apiserver",
        "serving",
        "admin",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "front-proxy-client",
        "metrics-server",
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
        write_private(pki / f"{file}.key", key_pem(key))
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
    # The API server's client certificate towards aggregated APIs (--requestheader-allowed-names).
    issue("front-proxy-client", name("front-proxy-client"), client)
    # metrics-server's serving certificate: the aggregator checks it names the Service.
    issue("metrics-server", name("metrics-server"), server, dns=("metrics-server.kube-system.svc", "localhost"))
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_private(pki / "sa.key", key_pem(sa_key))
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    write_private(pki / "ca.key", key_pem(ca_key))
    # The CA certificate last: its presence with the others marks the PKI complete.
    (pki / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))


def kubeconfig(server: str, pki: Path, user: str) -> dict[str, Any]:
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


def write_json(path: Path, data: Any, private: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    text = (json.dumps(data, indent=2) + "\n").encode()
    if private:
        write_private(tmp, text)
    else:
        tmp.write_bytes(text)
    os.replace(tmp, path)
