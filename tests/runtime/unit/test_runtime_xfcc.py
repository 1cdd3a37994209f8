"""XFCC header → SPIFFE id of the immediate peer."""

from __future__ import annotations

from suuupra_runtime.auth import parse_xfcc

PEER = "spiffe://suuupra.local/ns/suuupra/sa/courses"


def test_single_element() -> None:
    header = f"By=spiffe://suuupra.local/ns/suuupra/sa/identity;Hash=abc123;URI={PEER}"
    assert parse_xfcc(header) == PEER


def test_quoted_subject_with_separators_does_not_confuse_parsing() -> None:
    header = f'Hash=abc;Subject="CN=courses,O=Suuupra;x";URI={PEER}'
    assert parse_xfcc(header) == PEER


def test_last_element_is_the_immediate_peer() -> None:
    header = (
        "By=spiffe://a/sa/x;URI=spiffe://suuupra.local/ns/suuupra/sa/edge,"
        f'By=spiffe://a/sa/y;URI="{PEER}"'
    )
    assert parse_xfcc(header) == PEER


def test_non_spiffe_or_missing_uri_is_ignored() -> None:
    assert parse_xfcc("Hash=abc;URI=https://evil.example") is None
    assert parse_xfcc("Hash=abc;DNS=courses") is None
    assert parse_xfcc("") is None
    assert parse_xfcc("URI=spiffe://") is None
