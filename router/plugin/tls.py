"""The delivery clients' TLS context: httpx's defaults (certifi's CAs, or
SSL_CERT_FILE's), built once per process and shared by every sink and
transport that speaks TLS (router.plugin.aiohttp_transport, h1), and what
a failure to build it says."""

from __future__ import annotations

import functools
import ssl

import httpx

from router.ops.failures import Explained, one_line


class CaBundleError(Explained):
    """The CA certificates (SSL_CERT_FILE's, or certifi's) cannot be loaded:
    at a sink's open, the file rotated or removed since start (the
    commands that open sinks checked it then: ca_file_problem)."""

    @classmethod
    def of(cls, exc: BaseException) -> CaBundleError:
        return cls(
            f"cannot load the CA certificates (SSL_CERT_FILE's, or certifi's): {one_line(exc)}"
        )


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """httpx's defaults (certifi's CAs, verified), built once per process:
    loading the CA bundle takes tens of milliseconds, which every
    destination's first delivery would otherwise wait for (so a sink
    speaking TLS builds it when it is opened: AiohttpTransport.prepare)."""
    context = httpx.create_ssl_context()
    # Every transport speaks HTTP/1.1 only. httpcore (ROUTER_DELIVERY_TRANSPORT
    # =httpx) sets this on the context at each connect; set here, every
    # connection offers the same from the first, whichever transport made it.
    context.set_alpn_protocols(["http/1.1"])
    return context


def context_now() -> None:
    """The TLS context, built now (AiohttpTransport.prepare): its failure
    as one line a refused start or reload names."""
    try:
        ssl_context()
    except (OSError, ssl.SSLError) as exc:
        raise CaBundleError.of(exc) from exc


def ca_file_problem(path: str) -> str | None:
    """Why SSL_CERT_FILE (`path`, as Settings read it; httpx reads the same
    variable) gives no usable TLS context, as one line; None when it does.
    Asked by the commands that open destinations (serve, worker, check)
    before they do: a sink builds the context only where it may speak TLS,
    so a bad file would otherwise stop only the first https delivery. It
    is the context every sink then uses (ssl_context, cached): the file is
    read once."""
    fix = "fix the path or unset the variable (certifi's CAs are used then)"
    try:
        context = ssl_context()
    except (OSError, ssl.SSLError) as exc:
        return (
            f"SSL_CERT_FILE={path!r}: cannot load CA certificates from it "
            f"({type(exc).__name__}: {exc}): {fix}"
        )
    # Only a CRL: nothing to verify with, every https delivery would
    # fail. (Any certificate counts, not only CA ones: a destination's
    # own self-signed certificate, pinned, is a trust anchor too.)
    if not context.cert_store_stats()["x509"]:
        return f"SSL_CERT_FILE={path!r}: holds no certificate: {fix}"
    return None
