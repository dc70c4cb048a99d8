"""The Sieve parser and compiler: RFC 5228 grammar, extensions, and clean errors."""

from __future__ import annotations

import pytest
from sieve_examples import RFC5228_EXAMPLE

from mailstead.sieve.compile import compile_script
from mailstead.sieve.limits import SieveLimits
from mailstead.sieve.parser import SieveError, StringList, Tag, parse


def test_rfc5228_example_compiles() -> None:
    script = compile_script(RFC5228_EXAMPLE)
    assert script.extensions == frozenset({"fileinto"})
    (node,) = script.commands
    assert node.name == "if"
    assert len(node.branches) == 4
    assert node.branches[-1][0] is None  # else
    assert node.branches[1][0] is not None
    assert node.branches[1][0].address_part == "domain"


def test_tokens_strings_numbers_and_multiline() -> None:
    (cmd,) = parse(b'x "a\\"b\\\\c\\d" 10K :Tag ["p", "q"] text:\r\n..dot\r\nline\r\n.\r\n;')
    assert cmd.args == [
        StringList(('a"b\\cd',), True), 10 * 1024, Tag("tag"), StringList(("p", "q"), False),
        StringList((".dot\r\nline\r\n",), True),
    ]


def test_bracket_comments_and_lf_line_ends() -> None:
    (cmd,) = parse(b"/* a\n comment */ keep; # trailing\n")
    assert cmd.name == "keep"


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (b'fileinto "x";', 'needs require "fileinto"'),
        (b'require "nosuch";', "not supported"),
        (b'keep; require "fileinto";', "require must come before"),
        (b"if true { keep; } else { keep; } else { keep; }", "else without a preceding if"),
        (b"elsif true { keep; }", "without a preceding if"),
        (b'if header :is :contains "a" "b" { keep; }', "more than one match type"),
        (b'if header :comparator "i;bogus" "a" "b" { keep; }', "not supported"),
        (b"if size 10 { keep; }", "exactly one of :over and :under"),
        (b'if header "a" { keep; }', "expected 2 argument"),
        (b"keep", "expected ';'"),
        (b'if true { keep;', "missing '}'"),
        (b'"unterminated', "unterminated string"),
        (b"keep;\r /*", "bare CR"),
        (b'keep :flags "x";', 'needs require "imap4flags"'),
        (b'require "variables"; set "1bad" "x";', "invalid variable name"),
        (b"redirect;", "expected 1 argument"),
        (b"if not (true, false) { keep; }", "not takes exactly one test"),
        (b"frobnicate;", "unknown command"),
        (b"if frob { keep; }", "unknown test"),
        (b'require "envelope"; if envelope "x-bogus" "a" { keep; }', "not supported"),
        (b"/* open", "unterminated comment"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b"99999999999999999999;", "too large"),
    ],
)
def test_compile_errors_name_the_problem(script: bytes, message: str) -> None:
    with pytest.raises(SieveError) as info:
        compile_script(script)
    assert message in str(info.value)


def test_errors_carry_the_line_number() -> None:
    with pytest.raises(SieveError) as info:
        compile_script(b"keep;\nkeep;\nfrob;\n")
    assert info.value.line == 3


def test_limits_are_enforced() -> None:
    limits = SieveLimits(max_script_size=100, max_nesting=3, max_string=10, max_list_items=3)
    with pytest.raises(SieveError, match="larger than 100"):
        compile_script(b"keep;" * 30, limits)
    with pytest.raises(SieveError, match="nested too deeply"):
        compile_script(b"if true { if true { if true { if true { keep; } } } }", limits)
    with pytest.raises(SieveError, match="longer than 10"):
        compile_script(b'if header "subject" "01234567890" { keep; }', limits)
    with pytest.raises(SieveError, match="list too long"):
        compile_script(b'if header ["a","b","c","d"] "x" { keep; }', limits)


def test_deep_nesting_of_tests_is_a_clean_error() -> None:
    script = b"if " + b"not " * 5000 + b"true { keep; }"
    with pytest.raises(SieveError):
        compile_script(script)
    script = b"if " + b"anyof(" * 5000 + b"true" + b")" * 5000 + b" { keep; }"
    with pytest.raises(SieveError):
        compile_script(script)
