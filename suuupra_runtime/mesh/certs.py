"""Dev CA, SPIFFE workload certificates and the file-based SDS resources Envoy watches.

Layout under a certificate directory (the same shape a Kubernetes Secret volume has, so one Envoy
config works for the dev runner and for a cert-manager Secret mounted at `<dir>/<workload>`):

    <dir>/ca/ca.crt, ca.key            the throwaway dev CA (dev only)
    <dir>/<workload>/..data -> ..v<N>  symlink swapped atomically on rotation
    <dir>/<workload>/..v<N>/{tls.crt,tls.key,ca.crt}
    <dir>/<workload>/{tls.crt,tls.key,ca.crt} -> ..data/<file>
    <dir>/sds/<workload>/{tls_certificate,validation_context}.yaml   SDS resources

Envoy reads the SDS files through `path_config_source`; the secrets inside name the certificate
files and set `watched_directory` to `<dir>/<workload>`. Envoy reloads on a *move into* that
directory, which is exactly what the `..data` rename is, and then reads key and certificate
together, so a rotation can never present a certificate with the wrong key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from suuupra_runtime.mesh.topology import Topology, spiffe_id, workloads

CERT_FILE, KEY_FILE, CA_FILE = "tls.crt", "tls.key", "ca.crt"
DATA_LINK = "..data"
SECRET_CERTIFICATE = "workload_certificate"
SECRET_TRUSTED_CA = "trusted_ca"
SDS_CERTIFICATE_FILE = "tls_certificate.yaml"
SDS_VALIDATION_FILE = "validation_context.yaml"
_SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

CA_VALIDITY = dt.timedelta(days=365)
WORKLOAD_VALIDITY = dt.timedelta(days=30)
RENEW_BEFORE = dt.timedelta(days=3)
_VERSION_DIR = re.compile(r"^\.\.v(\d+)$")


@dataclass(frozen=True)
class WorkloadPaths:
    """Where one workload's certificate files and SDS resources live (paths as Envoy sees them)."""

    cert_dir: str
    workload: str

    @property
    def directory(self) -> str:
        return f"{self.cert_dir}/{self.workload}"

    @property
    def certificate(self) -> str:
        return f"{self.directory}/{CERT_FILE}"

    @property
    def private_key(self) -> str:
        return f"{self.directory}/{KEY_FILE}"

    @property
    def trusted_ca(self) -> str:
        return f"{self.directory}/{CA_FILE}"

    @property
    def sds_dir(self) -> str:
        return f"{self.cert_dir}/sds/{self.workload}"

    @property
    def sds_certificate(self) -> str:
        return f"{self.sds_dir}/{SDS_CERTIFICATE_FILE}"

    @property
    def sds_validation(self) -> str:
        return f"{self.sds_dir}/{SDS_VALIDATION_FILE}"


def sds_resources(paths: WorkloadPaths) -> dict[str, dict[str, Any]]:
    """The two SDS files of a workload, by file name (k8s puts them into a ConfigMap)."""
    watched = {"path": paths.directory}
    certificate = {
        "resources": [
            {
                "@type": _SECRET_TYPE,
                "name": SECRET_CERTIFICATE,
                "tls_certificate": {
                    "certificate_chain": {"filename": paths.certificate},
                    "private_key": {"filename": paths.private_key},
                    "watched_directory": watched,
                },
            }
        ]
    }
    validation = {
        "resources": [
            {
                "@type": _SECRET_TYPE,
                "name": SECRET_TRUSTED_CA,
                "validation_context": {
                    "trusted_ca": {"filename": paths.trusted_ca},
                    "watched_directory": watched,
                },
            }
        ]
    }
    return {SDS_CERTIFICATE_FILE: certificate, SDS_VALIDATION_FILE: validation}


# -- issuing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateAuthority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def create_ca(common_name: str = "Suuupra dev mesh CA") -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(cert, key)


def issue_workload_certificate(
    ca: CertificateAuthority, uri: str, dns_names: tuple[str, ...] = ()
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate for both TLS roles, identified by its URI SAN (the SPIFFE id)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    names += [x509.DNSName(d) for d in dns_names]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, uri.rsplit("/", 1)[-1])]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + WORKLOAD_VALIDITY, ca.certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        # SPIFFE X509-SVIDs carry the id as the only URI SAN; the SAN extension is critical when
        # the subject is not meaningful, but a CN is present here so tools can show a name.
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert, key


# -- files -------------------------------------------------------------------------------------


def load_ca(cert_dir: Path) -> CertificateAuthority:
    ca_dir = Path(cert_dir) / "ca"
    cert = x509.load_pem_x509_certificate((ca_dir / CA_FILE).read_bytes())
    key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_dir / 'ca.key'}: not an EC private key")
    return CertificateAuthority(cert, key)


def load_or_create_ca(cert_dir: Path) -> CertificateAuthority:
    ca_dir = Path(cert_dir) / "ca"
    if (ca_dir / CA_FILE).exists() and (ca_dir / "ca.key").exists():
        ca = load_ca(cert_dir)
        if ca.certificate.not_valid_after_utc - _now() > RENEW_BEFORE:
            return ca
    ca = create_ca()
    ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_atomic(ca_dir / "ca.key", _key_pem(ca.key), mode=0o600)
    _write_atomic(ca_dir / CA_FILE, ca.pem, mode=0o644)
    return ca


def load_workload_certificate(cert_dir: Path, workload: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((Path(cert_dir) / workload / CERT_FILE).read_bytes())


def ensure_dev_certificates(topology: Topology, cert_dir: Path) -> None:
    """Create (or renew) the dev CA, every workload's certificate and its SDS files.

    Idempotent: valid certificates signed by the current CA are kept, so re-running the dev
    runner does not churn certificates under running sidecars.
    """
    cert_dir = Path(cert_dir).resolve()
    ca = load_or_create_ca(cert_dir)
    for workload in workloads(topology):
        uri = spiffe_id(topology, workload)
        if not _is_current(cert_dir, workload, ca, uri):
            dns = (workload, f"{workload}.{topology.namespace}.svc.cluster.local", "localhost")
            cert, key = issue_workload_certificate(ca, uri, dns)
            _install(cert_dir / workload, cert, key, ca)
        write_sds_files(WorkloadPaths(str(cert_dir), workload), cert_dir / "sds" / workload)


def write_sds_files(paths: WorkloadPaths, target_dir: Path) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    for name, resource in sds_resources(paths).items():
        text = yaml.safe_dump(resource, sort_keys=False).encode()
        target = target_dir / name
        if not target.exists() or target.read_bytes() != text:
            _write_atomic(target, text, mode=0o644)


def rotate(cert_dir: Path, workload: str) -> x509.Certificate:
    """Issue a new key and certificate for `workload` (same SANs) and swap them in atomically.

    The new files go into a fresh `..v<N>` directory; then a new `..data` symlink is renamed over
    the old one. Envoy's watched_directory sees that move and reloads key and certificate as a
    pair; readers never observe a half-written file or a mismatched pair.
    """
    cert_dir = Path(cert_dir)
    ca = load_ca(cert_dir)
    old = load_workload_certificate(cert_dir, workload)
    san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise ValueError(f"{workload}: expected exactly one URI SAN, found {uris}")
    dns = tuple(san.get_values_for_type(x509.DNSName))
    cert, key = issue_workload_certificate(ca, uris[0], dns)
    _install(cert_dir / workload, cert, key, ca)
    return cert


def _install(
    workload_dir: Path,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    ca: CertificateAuthority,
) -> None:
    workload_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    versions = sorted(
        int(m.group(1)) for p in workload_dir.iterdir() if (m := _VERSION_DIR.match(p.name))
    )
    version = f"..v{(versions[-1] + 1) if versions else 1}"
    data_dir = workload_dir / version
    data_dir.mkdir(mode=0o755)
    (data_dir / KEY_FILE).write_bytes(_key_pem(key))
    (data_dir / KEY_FILE).chmod(0o600)
    (data_dir / CERT_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (data_dir / CA_FILE).write_bytes(ca.pem)
    _fsync_dir(data_dir)
    for name in (CERT_FILE, KEY_FILE, CA_FILE):
        link = workload_dir / name
        if not link.is_symlink():
            tmp = workload_dir / f".{name}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(f"{DATA_LINK}/{name}")
            tmp.replace(link)
    new_link = workload_dir / f"{DATA_LINK}_tmp"
    new_link.unlink(missing_ok=True)
    new_link.symlink_to(version)
    new_link.replace(workload_dir / DATA_LINK)  # the atomic move Envoy reacts to
    _fsync_dir(workload_dir)
    # Keep the previous version for readers that resolved `..data` just before the swap.
    for old in versions[:-1]:
        _remove_tree(workload_dir / f"..v{old}")


def _is_current(cert_dir: Path, workload: str, ca: CertificateAuthority, uri: str) -> bool:
    try:
        cert = load_workload_certificate(cert_dir, workload)
    except (FileNotFoundError, ValueError):
        return False
    try:
        cert.verify_directly_issued_by(ca.certificate)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    if san.get_values_for_type(x509.UniformResourceIdentifier) != [uri]:
        return False
    return cert.not_valid_after_utc - _now() > RENEW_BEFORE


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def describe(cert_dir: Path) -> list[str]:
    """One line per workload certificate (for the CLI): workload, SPIFFE id, serial, expiry."""
    lines = []
    for workload_dir in sorted(p for p in Path(cert_dir).iterdir() if (p / CERT_FILE).exists()):
        cert = load_workload_certificate(cert_dir, workload_dir.name)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uri = ",".join(san.get_values_for_type(x509.UniformResourceIdentifier))
        lines.append(
            f"{workload_dir.name}\t{uri}\tserial={cert.serial_number:x}\t"
            f"expires={cert.not_valid_after_utc:%Y-%m-%dT%H:%MZ}"
        )
    return lines
