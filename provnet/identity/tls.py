# TLS for provnet's HTTP servers (certificate + key -> SSLContext) and clients (CA bundle), with readable errors.
from __future__ import annotations

import ssl


class TlsError(ValueError):
    """A certificate, key or CA bundle that cannot be used; the message names the option and the file."""


def server_context(cert_file: str, key_file: str, option: str = "[ssl] cert_file/key_file") -> ssl.SSLContext | None:
    """An https server context when both files are given, None when neither is; one without the other is an error."""
    if not cert_file and not key_file:
        return None
    if not cert_file or not key_file:
        missing = "key" if cert_file else "certificate"
        raise TlsError(f"{option}: a certificate and its key are both needed for https (the {missing} is missing)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as exc:
        raise TlsError(f"{option}: no such file: {exc.filename}") from None
    except PermissionError as exc:
        raise TlsError(f"{option}: cannot read {exc.filename}: permission denied") from None
    except ssl.SSLError as exc:
        raise TlsError(f"{option}: {cert_file} and {key_file} are not a PEM certificate and its private key "
                       f"({exc.reason or exc})") from None
    except OSError as exc:
        raise TlsError(f"{option}: cannot read the certificate or key: {exc.strerror or exc}") from None
    return context


def client_context(cafile: str = "", insecure: bool = False) -> ssl.SSLContext:
    """A client context that verifies the server against `cafile` (else the system's CAs)."""
    try:
        context = ssl.create_default_context(cafile=cafile or None)
    except FileNotFoundError:
        raise TlsError(f"CA bundle {cafile}: no such file") from None
    except ssl.SSLError as exc:
        raise TlsError(f"CA bundle {cafile}: not PEM certificates ({exc.reason or exc})") from None
    except OSError as exc:
        raise TlsError(f"CA bundle {cafile}: {exc.strerror or exc}") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def describe_failure(url: str, exc: BaseException, ca_hint: str) -> str | None:
    """One line for a refused certificate (None when `exc` is not that): what failed, and how to trust it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or str(exc)
        return f"the certificate of {url} is not trusted ({why}): {ca_hint}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {url} failed ({exc.reason or exc}): is it an https server? {ca_hint}"
    return None
