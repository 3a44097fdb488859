"""A one-certificate trust store for the test session.

Every `httpx.get()`/`httpx.post()` (and every client) builds a TLS context
and loads the whole CA bundle into it: 25 ms of CPU each, whatever the
URL. The suite makes thousands of such calls over plain HTTP on loopback
(and starts a few hundred router processes that make their own), and on
two cores that CPU was a tenth of `make test`'s time. With SSL_CERT_FILE
naming one certificate a client costs about 1 ms. Nothing in the suite
speaks TLS to a public server, so which CAs are trusted changes no test.
Set for this process and inherited by the processes it starts, even
where SSL_CERT_FILE is already set: machines commonly set it to the
system's whole bundle (this one does, machine-wide), which costs the same
35 ms a client, and no test needs the CAs it names.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile

import certifi

_BEGIN, _END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"


def use_small_trust_store() -> None:
    with open(certifi.where()) as bundle:
        text = bundle.read()
    start = text.index(_BEGIN)
    first = text[start : text.index(_END, start) + len(_END)] + "\n"
    fd, path = tempfile.mkstemp(prefix="router-tests-ca-", suffix=".pem")
    with os.fdopen(fd, "w") as out:
        out.write(first)
    atexit.register(_remove, path)
    os.environ["SSL_CERT_FILE"] = path


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
