"""Certificates for TLS tests, made with the ``cryptography`` package, and TLS registries.

:class:`Pki` writes a throwaway PKI into a directory: a server CA, a client CA, and on request
server certificates (for ``127.0.0.1``, ``localhost`` and ``::1`` by default; expired, for
another host name, or self-signed) and client certificate pairs.  Keys are small EC keys (fast).

:func:`start_tls_registry` starts a real ``docker-registry`` with ``http.tls`` (and
``http.tls.clientcas`` when client certificates are demanded) serving an existing registry's
storage, so every image of the session's lab is reachable over HTTPS too.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.peers import Registry, start_registry

_DAY = datetime.timedelta(days=1)
_Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: _Key, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class _Authority:
    def __init__(self, common_name: str, directory: Path, stem: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{stem}.crt"
        _write_cert(self.cert, self.path)


class Pki:
    """A throwaway PKI in ``directory``: ``ca`` (servers) and ``client_ca`` (clients)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._ca = _Authority("hatchway test server CA", directory, "ca")
        self._client_ca = _Authority("hatchway test client CA", directory, "client-ca")
        self.ca = self._ca.path
        self.client_ca = self._client_ca.path

    def server(
        self,
        stem: str,
        names: tuple[str, ...] = ("127.0.0.1", "localhost", "::1"),
        *,
        expired: bool = False,
        self_signed: bool = False,
    ) -> Pair:
        """A server certificate for ``names`` (IP addresses become IP SANs)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (now - 10 * _DAY, now - 2 * _DAY) if expired else (now - _DAY, now + 10 * _DAY)
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        issuer_key: _Key = key if self_signed else self._ca.key
        issuer_name = _name(names[0]) if self_signed else self._ca.cert.subject
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        if not self_signed:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca.key.public_key()),
                critical=False,
            )
        cert = builder.sign(issuer_key, hashes.SHA256())
        pair = Pair(self.directory / f"{stem}.pem", self.directory / f"{stem}-key.pem")
        _write_cert(cert, pair.cert)
        _write_key(key, pair.key)
        return pair

    def client(self, stem: str, *, directory: Path | None = None) -> Pair:
        """A client certificate signed by ``client_ca``; written as ``STEM.cert``/``STEM.key``
        (the certs.d spelling) into ``directory`` (default: the PKI's own)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"hatchway test client {stem}"))
            .issuer_name(self._client_ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 10 * _DAY)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self._client_ca.key.public_key()
                ),
                critical=False,
            )
            .sign(self._client_ca.key, hashes.SHA256())
        )
        where = directory or self.directory
        where.mkdir(parents=True, exist_ok=True)
        pair = Pair(where / f"{stem}.cert", where / f"{stem}.key")
        _write_cert(cert, pair.cert)
        _write_key(key, pair.key)
        return pair

    def probe_context(self, pair: Pair | None = None) -> ssl.SSLContext:
        """An SSL context for readiness probes: verifies nothing (some tests serve expired,
        misnamed or self-signed certificates on purpose), presents ``pair`` if given."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if pair is not None:
            context.load_cert_chain(str(pair.cert), str(pair.key))
        return context


def start_tls_registry(
    workdir: Path,
    storage: Path,
    pki: Pki,
    server: Pair,
    *,
    client_certificates: bool = False,
) -> Registry:
    """A registry serving ``storage`` over HTTPS with ``server``'s certificate on 127.0.0.1.

    With ``client_certificates`` it demands a client certificate signed by ``pki.client_ca``
    (distribution's ``http.tls.clientcas``).  Readiness is probed over HTTPS without
    verification, presenting a probe client certificate when one is demanded.
    """
    tls: dict[str, object] = {"certificate": str(server.cert), "key": str(server.key)}
    probe_pair = None
    if client_certificates:
        tls["clientcas"] = [str(pki.client_ca)]
        probe_pair = pki.client(f"probe-{workdir.name}")
    return start_registry(
        workdir,
        {"storage": {"filesystem": {"rootdirectory": str(storage)}}, "http": {"tls": tls}},
        tls_context=pki.probe_context(probe_pair),
    )


class TlsLab:
    """TLS registries for a session, each started on first use, all serving the storage of
    the plain lab registry (so every lab image is there): ``tls`` (certificate for
    127.0.0.1, localhost and ::1 from ``pki.ca``), ``mtls`` (the same, and it demands a client
    certificate from ``pki.client_ca``), ``wrong_name`` (a certificate for other.example),
    ``expired`` and ``self_signed``."""

    def __init__(self, workdir: Path, storage: Path) -> None:
        self.workdir = workdir
        self.storage = storage
        self.pki = Pki(workdir / "pki")
        self._server = self.pki.server("server")
        self._started: dict[str, Registry] = {}

    def _start(self, name: str, server: Pair | None = None, *, mtls: bool = False) -> Registry:
        if name not in self._started:
            self._started[name] = start_tls_registry(
                self.workdir / name,
                self.storage,
                self.pki,
                server or self._server,
                client_certificates=mtls,
            )
        return self._started[name]

    @property
    def tls(self) -> Registry:
        return self._start("tls")

    @property
    def mtls(self) -> Registry:
        return self._start("mtls", mtls=True)

    @property
    def wrong_name(self) -> Registry:
        return self._start("wrong-name", self.pki.server("other", ("other.example",)))

    @property
    def expired(self) -> Registry:
        return self._start("expired", self.pki.server("expired", expired=True))

    @property
    def self_signed(self) -> Registry:
        return self._start("self-signed", self.pki.server("self-signed", self_signed=True))

    def close(self) -> None:
        for registry in self._started.values():
            registry.stop()
        self._started.clear()
