"""The sandbox's certificates pass strict X.509 verification (RFC 5280 profile of `cryptography`),
as a Go client with strict checks would demand, and carry the identities the apiserver reads."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from rainbowd_sandbox.certs import write_pki


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_serving_certificate_verifies_for_loopback_names(tmp_path: Path) -> None:
    pki = write_pki(tmp_path)
    ca = _load(pki.ca_cert)
    store = Store([ca])
    now = dt.datetime.now(dt.UTC)
    subjects: list[x509.DNSName | x509.IPAddress] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    for subject in subjects:
        verifier = PolicyBuilder().store(store).time(now).build_server_verifier(subject)
        chain = verifier.verify(_load(pki.serving_cert), [])
        assert chain[-1] == ca

    elsewhere = PolicyBuilder().store(store).time(now).build_server_verifier(x509.DNSName("x.test"))
    with pytest.raises(VerificationError):
        elsewhere.verify(_load(pki.serving_cert), [])


def test_admin_certificate_is_a_system_masters_client(tmp_path: Path) -> None:
    pki = write_pki(tmp_path)
    store = Store([_load(pki.ca_cert)])
    verifier = PolicyBuilder().store(store).time(dt.datetime.now(dt.UTC)).build_client_verifier()
    verified = verifier.verify(_load(pki.admin_cert), [])
    subject = verified.chain[0].subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    orgs = [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]


def test_ca_constraints_are_critical(tmp_path: Path) -> None:
    ca = _load(write_pki(tmp_path).ca_cert)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert constraints.critical and constraints.value.ca
    assert usage.critical and usage.value.key_cert_sign


def test_another_ca_does_not_verify(tmp_path: Path) -> None:
    first = write_pki(tmp_path / "a")
    second = write_pki(tmp_path / "b")
    verifier = (
        PolicyBuilder()
        .store(Store([_load(second.ca_cert)]))
        .time(dt.datetime.now(dt.UTC))
        .build_server_verifier(x509.DNSName("localhost"))
    )
    with pytest.raises(VerificationError):
        verifier.verify(_load(first.serving_cert), [])
