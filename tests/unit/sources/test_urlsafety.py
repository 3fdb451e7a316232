"""URL safety without a network: which addresses are public, how a URL is named."""

from __future__ import annotations

import pytest

from tagger.sources import is_public_address, redact_url

SECRET = "SIGNATURE-SECRET-123"


# -- address policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.5.5.5",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.170.2",
        "100.64.0.1",
        "100.100.100.200",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::1",
        "not-an-address",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(address)


def test_redact_url_drops_query_and_user_info() -> None:
    shown = redact_url(f"https://me:{SECRET}@Example.com:8443/a/b.jpg?X-Amz-Signature={SECRET}#f")
    assert SECRET not in shown
    assert shown == "https://example.com:8443/a/b.jpg?<redacted>"
