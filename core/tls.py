"""Certificates: the self-signed one `deeplens-edge install` makes for a device, and the
fingerprint by which the controller pins it (docs/cli.md, "Trust")."""
import datetime
import hashlib
import ipaddress
import os
import ssl
from pathlib import Path

from .errors import InvalidInput
from .fileio import atomic_write_bytes


def fingerprint(der):
    """SHA-256 of a DER certificate as upper-case hex pairs joined by ':' (AA:BB:...)."""
    return pairs(hashlib.sha256(der).hexdigest())


def pairs(hexdigits):
    """'abcd...' -> 'AB:CD:...'."""
    return ":".join(hexdigits[i:i + 2] for i in range(0, len(hexdigits), 2)).upper()


def certificate_fingerprint(path):
    """The fingerprint of the first certificate in a PEM file."""
    try:
        der = ssl.PEM_cert_to_DER_cert(Path(path).read_text(encoding="ascii"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: not a readable PEM certificate ({exc})", "bad_certificate") from None
    return fingerprint(der)


def self_signed(cert_path, key_path, name, hosts, days=3650):
    """Write a self-signed certificate for `hosts` (names and IP addresses) and its key (0600);
    returns the certificate's fingerprint. (cryptography is imported here: only install needs it.)"""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    alt_names = []
    for host in dict.fromkeys(hosts):
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    old_umask = os.umask(0o077)
    try:
        atomic_write_bytes(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    finally:
        os.umask(old_umask)
    atomic_write_bytes(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))
