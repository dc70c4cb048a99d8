"""Command-line parsing helpers."""

from __future__ import annotations

import pytest

from mailstead.proto.smtp.commands import (
    Command,
    CommandError,
    check_mail_parameters,
    parse_bdat,
    parse_helo,
    parse_parameters,
    split_command,
    split_path_argument,
)


def test_split_command() -> None:
    assert split_command("mail FROM:<a@b>") == Command("MAIL", "FROM:<a@b>")
    assert split_command("NOOP") == Command("NOOP", "")
    assert split_command(" NOOP") is None
    assert split_command("M@IL x") is None


def test_path_with_quoted_angle_bracket_and_params() -> None:
    path, params = split_path_argument('FROM:<"a>b"@c.test> SIZE=5', "FROM:", "u")
    assert (path, params) == ('<"a>b"@c.test>', "SIZE=5")
    path, params = split_path_argument('from: <"a\\">"@c.test>', "FROM:", "u")
    assert (path, params) == ('<"a\\">"@c.test>', "")


@pytest.mark.parametrize("arg", ["FROM:", "FROM:a@b", "FROM:<a@b", "TO:<a@b>", "FROM:<a@b>x"])
def test_bad_path_arguments(arg: str) -> None:
    with pytest.raises(CommandError) as info:
        split_path_argument(arg, "FROM:", "MAIL FROM:<address>")
    assert info.value.reply.code == 501


def test_parameters() -> None:
    assert parse_parameters("size=10  body=8bitmime SMTPUTF8") == {
        "SIZE": "10", "BODY": "8bitmime", "SMTPUTF8": None}
    for bad in ["=x", "A=", "A=b=c", "-A=1", "A=\x7f"]:
        with pytest.raises(CommandError):
            parse_parameters(bad)
    checked = check_mail_parameters({"SIZE": "10", "BODY": "8bitmime", "AUTH": "a+2Bb"})
    assert (checked.size, checked.body, checked.auth) == (10, "8BITMIME", "a+2Bb")
    with pytest.raises(CommandError):
        check_mail_parameters({"AUTH": "a+zz"})


def test_bdat_and_helo_arguments() -> None:
    assert parse_bdat("10") == (10, False)
    assert parse_bdat("0 last") == (0, True)
    assert parse_bdat("10 LAST ") is None
    assert parse_helo(" host.test ") == "host.test"
    assert parse_helo("[192.0.2.1]") == "[192.0.2.1]"
    assert parse_helo("") is None
    assert parse_helo("a\x01b") is None
