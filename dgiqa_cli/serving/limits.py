"""Who may use a scoring service: API keys, and whether a listening address leaves this machine.

The upload limit itself is FastAPI's ``max_body_size`` (Starlette's body-limit
middleware), counted on the bytes that actually arrive: a declared
``Content-Length`` over the limit is refused before anything is read (413,
plain text), and a body that grows past it (chunked, or a lying header) as
soon as it does (413, JSON).
"""

from __future__ import annotations

import hmac
import ipaddress


def key_matches(authorization: str | None, api_key: str) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <api_key>``, compared in constant time."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), api_key.encode())


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # another host name: it may resolve to anything
        return False
