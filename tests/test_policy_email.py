"""valid_email: its fast path for plain addresses never accepts what email-validator refuses."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from workers.policy import _PLAIN_EMAIL, _plainly_valid, valid_email


def reference(address: str) -> bool:
    """email-validator's own verdict, as the deliver job asks for it (no DNS)."""
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


@pytest.mark.parametrize(
    ("address", "plain", "valid"),
    [
        ("jane.doe@example.com", True, True),
        ("A_b+c-d@Sub.Example.COM", True, True),
        ("x@a.co", True, True),
        ("a..b@example.com", False, False),
        (".a@example.com", False, False),
        ("a.@example.com", False, False),
        ("a@example", False, False),
        ("a@example.c0m", False, True),  # a TLD need only end in a letter
        ("a@-example.com", False, False),
        ("a@example-.com", False, False),
        ("a@ab--cd.com", False, False),  # R-LDH label, not Punycode
        ("a@xn--bcher-kva.example", False, True),  # Punycode: the full check decides
        ("a@mail.localhost", False, False),
        ("a@printer.local", False, False),
        ("a@x.onion", False, False),
        ("a@x.TEST", False, False),
        ("a@1.2.3.4", False, False),
        ("o'brien@example.ie", False, True),  # legal atext outside the plain set
        ("jörg@example.de", False, True),
        ("a@bücher.example", False, True),
        ("a b@example.com", False, False),
        ("a@example.com ", False, False),
        ("a" * 65 + "@example.com", False, True),  # not strict about the local length
        ("a" * 64 + "@example.com", True, True),
        ("a@" + "b" * 64 + ".com", False, False),
        ("a@" + ".".join(["b" * 63] * 4) + ".com", False, False),  # domain past 253
    ],
)
def test_plain_addresses_take_the_fast_path_and_the_rest_the_full_check(
    address: str, plain: bool, valid: bool
) -> None:
    assert _plainly_valid(address) is plain
    assert valid_email(address) is valid
    assert reference(address) is valid


_ADDRESS_CHARS = st.sampled_from("aZ09_+-.@'ü\u00e9 -xn")


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.from_regex(_PLAIN_EMAIL, fullmatch=True),
        st.text(_ADDRESS_CHARS, min_size=1, max_size=40),
        st.builds(
            lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
            st.text(_ADDRESS_CHARS, min_size=1, max_size=12),
            st.lists(st.text(_ADDRESS_CHARS, min_size=0, max_size=12), min_size=1, max_size=3),
            st.sampled_from(["com", "local", "test", "arpa", "c0", "x", "invalid", "Onion"]),
        ),
    )
)
@example("a@b.localhost")
@example("a@xn--x.com")
def test_the_fast_path_only_accepts_what_email_validator_accepts(address: str) -> None:
    if _plainly_valid(address):
        assert reference(address), address
    assert valid_email(address) is reference(address)
