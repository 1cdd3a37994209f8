"""Dev CA and SPIFFE workload certificates, in memory (file handling is in tests/mesh)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from suuupra_runtime.mesh.certs import (
    SECRET_CERTIFICATE,
    SECRET_TRUSTED_CA,
    WorkloadPaths,
    create_ca,
    issue_workload_certificate,
    sds_resources,
)

SPIFFE = "spiffe://suuupra.local/ns/suuupra/sa/ledger"


def test_workload_certificate_carries_the_spiffe_id_and_chains_to_the_ca() -> None:
    ca = create_ca()
    cert, key = issue_workload_certificate(ca, SPIFFE, ("ledger",))
    cert.verify_directly_issued_by(ca.certificate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE]
    assert san.get_values_for_type(x509.DNSName) == ["ledger"]
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.public_key() == key.public_key()
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.not_valid_after_utc <= ca.certificate.not_valid_after_utc


def test_each_issue_is_a_fresh_key_and_serial() -> None:
    ca = create_ca()
    first, first_key = issue_workload_certificate(ca, SPIFFE)
    second, second_key = issue_workload_certificate(ca, SPIFFE)
    assert first.serial_number != second.serial_number
    assert first_key.public_key() != second_key.public_key()


def test_ca_is_a_p256_ca_only_for_leaves() -> None:
    ca = create_ca()
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True
    assert constraints.path_length == 0
    assert isinstance(ca.key.curve, ec.SECP256R1)


def test_sds_resources_watch_the_workload_directory() -> None:
    files = sds_resources(WorkloadPaths("/certs", "ledger"))
    cert = files["tls_certificate.yaml"]["resources"][0]
    assert cert["name"] == SECRET_CERTIFICATE
    assert cert["tls_certificate"] == {
        "certificate_chain": {"filename": "/certs/ledger/tls.crt"},
        "private_key": {"filename": "/certs/ledger/tls.key"},
        "watched_directory": {"path": "/certs/ledger"},
    }
    ca = files["validation_context.yaml"]["resources"][0]
    assert ca["name"] == SECRET_TRUSTED_CA
    assert ca["validation_context"]["trusted_ca"] == {"filename": "/certs/ledger/ca.crt"}
    assert ca["validation_context"]["watched_directory"] == {"path": "/certs/ledger"}
