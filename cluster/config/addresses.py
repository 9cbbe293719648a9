"""Addresses: which ones only this machine can reach."""

from __future__ import annotations

import ipaddress


def is_loopback_host(address: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``: only this machine can connect."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
