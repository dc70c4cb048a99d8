from __future__ import annotations

import pytest

from mailstead.accounts.names import DomainNameError, ascii_domain, domain_forms, normalise_domain


@pytest.mark.parametrize(
    ("text", "ascii_form", "unicode_form"),
    [
        ("Example.TEST", "example.test", "example.test"),
        ("example.test.", "example.test", "example.test"),
        ("Bücher.test", "xn--bcher-kva.test", "bücher.test"),
        ("xn--bcher-kva.test", "xn--bcher-kva.test", "bücher.test"),
        ("a-b.c1.test", "a-b.c1.test", "a-b.c1.test"),
    ],
)
def test_forms(text: str, ascii_form: str, unicode_form: str) -> None:
    assert domain_forms(text) == (ascii_form, unicode_form)
    assert ascii_domain(text) == ascii_form
    assert normalise_domain(text) == unicode_form


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "localhost",
        "a..test",
        "-a.test",
        "a-.test",
        "a_b.test",
        "a b.test",
        "x" * 64 + ".test",
        ".".join(["a" * 60] * 5),
        "1.2.3.4",
        "xn--zz.test",
        "a\nb.test",
        "x" * 5000,
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(DomainNameError):
        domain_forms(text)
