"""The SSRF rules without a network: spellings of a host, and which addresses are public."""

from __future__ import annotations

import ipaddress

import pytest

from payorch.webhooks.urls import AddressPolicy, RefusedUrl, canonical_host, parse


@pytest.mark.parametrize(
    "host",
    ["2852039166", "0xa9fea9fe", "0x7f.1", "017700000001", "127.1", "0177.0.0.1", "1.2.3.4.5", "example.0x10",
     "localhost.", "example.com.", "a..b", "-a.example", "ｌｏｃａｌｈｏｓｔ", "１２７.０.０.１", "fe80::1%eth0",
     "x" * 64 + ".com"],
)  # fmt: skip
def test_ambiguous_spellings_are_refused_not_interpreted(host: str) -> None:
    with pytest.raises(RefusedUrl):
        canonical_host(host)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Hooks.Example.COM", ("hooks.example.com", None)),
        ("müller.de", ("xn--mller-kva.de", None)),
        ("93.184.216.34", ("93.184.216.34", ipaddress.ip_address("93.184.216.34"))),
        ("2606:2800::1", ("2606:2800::1", ipaddress.ip_address("2606:2800::1"))),
    ],
)
def test_canonical_hosts(host: str, expected: tuple[str, object]) -> None:
    assert canonical_host(host) == expected


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "10.0.0.1", "100.64.0.1", "169.254.169.254", "fd00:ec2::254", "168.63.129.16", "0.0.0.0",
     "224.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1", "fe80::1", "fc00::1", "ff02::1",
     "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::10.0.0.1", "2002:a00:1::", "2002:7f00:1::", "64:ff9b::a00:1",
     "64:ff9b::a9fe:a9fe", "64:ff9b:1::808:808", "2001:0:4136:e378:8000:63bf:f5ff:fffa", "2001:db8::1"],
)  # fmt: skip
def test_internal_and_wrapped_internal_addresses_are_refused(address: str) -> None:
    assert not AddressPolicy().permits(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:8.8.8.8", "2002:808:808::1",
     "64:ff9b::808:808", "2001:0:4136:e378:8000:63bf:f7f7:f7f7"],
)  # fmt: skip
def test_public_and_wrapped_public_addresses_are_permitted(address: str) -> None:
    assert AddressPolicy().permits(ipaddress.ip_address(address))


def test_loopback_only_by_the_development_setting_and_never_wrapped() -> None:
    allowing = AddressPolicy(allow_loopback=True)
    assert allowing.permits(ipaddress.ip_address("127.0.0.1"))
    assert allowing.permits(ipaddress.ip_address("::1"))
    for wrapped in ("::ffff:127.0.0.1", "2002:7f00:1::", "64:ff9b::7f00:1"):
        assert not allowing.permits(ipaddress.ip_address(wrapped))
    assert not allowing.permits(ipaddress.ip_address("10.0.0.1"))


@pytest.mark.parametrize(
    ("url", "livemode", "reason"),
    [
        ("http://93.184.216.34/h", True, "https"),
        ("ftp://93.184.216.34/h", False, "http"),
        ("https://user:pw@93.184.216.34/h", False, "credentials"),
        ("https://93.184.216.34/h#frag", False, "fragment"),
        ("https://%31%32%37.0.0.1/h", False, "percent"),
        ("https://93.184.216.34:99999/h", False, "valid"),
    ],
)
def test_url_shape(url: str, livemode: bool, reason: str) -> None:
    with pytest.raises(RefusedUrl, match=reason):
        parse(url, livemode=livemode)
