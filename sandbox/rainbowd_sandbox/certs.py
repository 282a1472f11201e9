"""Certificates and keys for a loopback control plane, generated with `cryptography`.

A CA, the apiserver's serving certificate, an admin client certificate (system:masters) and the
service-account signing key pair, written as PEM files into one folder.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for any sandbox session, short enough that a leaked key is worthless soon.
_VALIDITY = dt.timedelta(days=7)
# Clocks of a freshly started process may disagree by a little; do not start in the future.
_BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files; every file exists once `write_pki` returns."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_private_key: Path
    sa_public_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256 keys take microseconds to generate where RSA takes tens of milliseconds, and every
    # Kubernetes component accepts them (service-account tokens become ES256).
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    *,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePublicKey,
    ca: bool,
) -> x509.CertificateBuilder:
    """A certificate of this PKI up to its extensions of use: the CA's (`ca`) or one it issues."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    common_name: str,
    organizations: tuple[str, ...] = (),
    server: bool,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = _builder(
        _name(common_name, organizations),
        key.public_key(),
        issuer=ca_cert.subject,
        issuer_key=ca_key.public_key(),
        ca=False,
    ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def write_pki(
    directory: Path,
    *,
    hosts: tuple[str, ...] = ("localhost",),
    ip_addresses: tuple[str, ...] = ("127.0.0.1",),
) -> Pki:
    """Generates a fresh CA and everything it signs into `directory`.

    The serving certificate covers `hosts` and `ip_addresses`; give it the first address of the
    service range too, which is how in-cluster clients reach the `kubernetes` Service.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_private_key=directory / "sa.key",
        sa_public_key=directory / "sa.pub",
    )

    ca_key = _key()
    ca_name = _name("rainbowd-sandbox-ca")
    ca_cert = _builder(
        ca_name, ca_key.public_key(), issuer=ca_name, issuer_key=ca_key.public_key(), ca=True
    ).sign(ca_key, hashes.SHA256())
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.ca_cert, ca_cert)

    serving_key, serving_cert = _issue(
        ca_key,
        ca_cert,
        common_name="kube-apiserver",
        server=True,
        dns_names=(*hosts, "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        ip_addresses=ip_addresses,
    )
    _write_key(pki.serving_key, serving_key)
    _write_cert(pki.serving_cert, serving_cert)

    # Kubernetes reads only CN and O; the SAN is there because strict RFC 5280 verifiers (such as
    # cryptography's client verifier) reject an end-entity certificate without one.
    admin_key, admin_cert = _issue(
        ca_key,
        ca_cert,
        common_name="admin",
        organizations=("system:masters",),
        server=False,
        dns_names=("admin",),
    )
    _write_key(pki.admin_key, admin_key)
    _write_cert(pki.admin_cert, admin_cert)

    sa_key = _key()
    _write_key(pki.sa_private_key, sa_key)
    pki.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
