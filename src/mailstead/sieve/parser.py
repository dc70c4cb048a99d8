"""The Sieve lexer and parser (RFC 5228 section 8): script text in, a syntax tree out.

Hostile scripts meet hard limits (size, nesting, string length, number of commands and list
items); every problem is a ``SieveError`` with the line it was found on, never another
exception. Semantic checks (which commands and tags exist, ``require``) are ``compile.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailstead.sieve.limits import SieveLimits


class SieveError(Exception):
    """A script that cannot be compiled; ``line`` is 1-based (0 when unknown)."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.message = message
        self.line = line


@dataclass(frozen=True, slots=True)
class Tag:
    """A tagged argument such as ``:contains`` (name lower-cased, without the colon)."""

    name: str


@dataclass(frozen=True, slots=True)
class StringList:
    """A string (``single``) or a bracketed string list (RFC 5228 section 2.4.2)."""

    items: tuple[str, ...]
    single: bool


Argument = Tag | int | StringList


@dataclass(slots=True)
class Test:
    name: str  # lower-cased identifier
    args: list[Argument]
    tests: list[Test]
    line: int


@dataclass(slots=True)
class Command:
    name: str
    args: list[Argument]
    tests: list[Test]
    block: list[Command] | None
    line: int


# Token kinds.
_IDENT, _TAG, _NUM, _STR, _LIST_OPEN, _LIST_CLOSE, _COMMA = "id", "tag", "num", "str", "[", "]", ","
_SEMI, _BLOCK_OPEN, _BLOCK_CLOSE, _PAREN_OPEN, _PAREN_CLOSE, _EOF = ";", "{", "}", "(", ")", "eof"

_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789")
_DIGITS = frozenset("0123456789")
# RFC 5228 section 2.4.1: QUANTIFIER = "K" / "M" / "G" (case-insensitive, powers of 1024).
_QUANT = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
# Numbers are unsigned and at least 31 bits (RFC 5228 section 2.4.1); we cap at 2^63-1.
_MAX_NUMBER = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    value: str | int
    line: int


class _Lexer:
    def __init__(self, text: str, limits: SieveLimits) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.limits = limits

    def tokens(self) -> list[_Token]:
        out: list[_Token] = []
        while True:
            tok = self._next()
            out.append(tok)
            if tok.kind == _EOF:
                return out
            if len(out) > self.limits.max_tokens:
                raise SieveError("script has too many tokens", tok.line)

    def _next(self) -> _Token:
        text, n = self.text, len(self.text)
        while self.pos < n:
            ch = text[self.pos]
            if ch in " \t":
                self.pos += 1
            elif ch == "\r":
                if text.startswith("\r\n", self.pos):
                    self.pos += 2
                    self.line += 1
                else:
                    # RFC 5228 section 8.1: line breaks are CRLF; we also take LF, never bare CR.
                    raise SieveError("bare CR in script", self.line)
            elif ch == "\n":
                self.pos += 1
                self.line += 1
            elif ch == "#":  # hash-comment, to the end of the line
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end
            elif text.startswith("/*", self.pos):  # bracket-comment, never nested
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise SieveError("unterminated comment", self.line)
                self.line += text.count("\n", self.pos, end)
                self.pos = end + 2
            else:
                break
        if self.pos >= n:
            return _Token(_EOF, "", self.line)
        ch = text[self.pos]
        line = self.line
        if ch in "[],;{}()":
            self.pos += 1
            return _Token(ch, ch, line)
        if ch == '"':
            return _Token(_STR, self._quoted(), line)
        if ch == ":":
            self.pos += 1
            name = self._identifier()
            if not name:
                raise SieveError("':' must start a tag such as :contains", line)
            return _Token(_TAG, name.lower(), line)
        if ch in _DIGITS:
            return _Token(_NUM, self._number(), line)
        if ch in _IDENT_START:
            name = self._identifier()
            if name.lower() == "text" and text.startswith(":", self.pos):
                self.pos += 1
                return _Token(_STR, self._multiline(), line)
            return _Token(_IDENT, name.lower(), line)
        raise SieveError(f"unexpected character {ch!r}", line)

    def _identifier(self) -> str:
        start = self.pos
        text = self.text
        if self.pos < len(text) and text[self.pos] in _IDENT_START:
            self.pos += 1
            while self.pos < len(text) and text[self.pos] in _IDENT_CHARS:
                self.pos += 1
        name = text[start:self.pos]
        if len(name) > self.limits.max_identifier:
            raise SieveError("identifier too long", self.line)
        return name

    def _number(self) -> int:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _DIGITS:
            self.pos += 1
        digits = self.text[start:self.pos]
        if len(digits) > 19:
            raise SieveError("number too large", self.line)
        value = int(digits)
        q = self.text[self.pos:self.pos + 1].lower()
        if q in _QUANT:
            value *= _QUANT[q]
            self.pos += 1
        if value > _MAX_NUMBER:
            raise SieveError("number too large", self.line)
        return value

    def _check_len(self, length: int) -> None:
        if length > self.limits.max_string:
            raise SieveError(f"string longer than {self.limits.max_string} characters",
                             self.line)

    def _quoted(self) -> str:
        # RFC 5228 section 2.4.2: "\\" and "\"" are the escapes; any other "\x" is "x".
        text = self.text
        i = self.pos + 1
        out: list[str] = []
        start_line = self.line
        while True:
            j = min((k for k in (text.find('"', i), text.find("\\", i)) if k >= 0), default=-1)
            if j < 0:
                raise SieveError("unterminated string", start_line)
            out.append(text[i:j])
            if text[j] == '"':
                value = "".join(out)
                self.line += text.count("\n", self.pos, j)
                self.pos = j + 1
                self._check_len(len(value))
                return value
            if j + 1 >= len(text):
                raise SieveError("unterminated string", start_line)
            out.append(text[j + 1])
            i = j + 2
            if sum(map(len, out)) > self.limits.max_string:
                self._check_len(self.limits.max_string + 1)

    def _multiline(self) -> str:
        # RFC 5228 section 8.1: "text:" *(SP / HTAB) (hash-comment / CRLF), then lines with
        # leading "." doubled, ended by "." CRLF.
        text = self.text
        nl = text.find("\n", self.pos)
        if nl < 0:
            raise SieveError("unterminated multi-line string", self.line)
        rest = text[self.pos:nl].rstrip("\r").strip(" \t")
        if rest and not rest.startswith("#"):
            raise SieveError("text: must be followed by the end of the line", self.line)
        start_line = self.line
        self.line += 1
        pos = nl + 1
        lines: list[str] = []
        size = 0
        while True:
            nl = text.find("\n", pos)
            if nl < 0:
                raise SieveError("unterminated multi-line string", start_line)
            line = text[pos:nl]
            if line.endswith("\r"):
                line = line[:-1]
            pos = nl + 1
            self.line += 1
            if line == ".":
                break
            if line.startswith(".."):
                line = line[1:]
            lines.append(line)
            size += len(line) + 2
            self._check_len(size)
        self.pos = pos
        return "".join(f"{ln}\r\n" for ln in lines)


class _Parser:
    def __init__(self, tokens: list[_Token], limits: SieveLimits) -> None:
        self.toks = tokens
        self.i = 0
        self.limits = limits
        self.commands = 0

    def _peek(self) -> _Token:
        return self.toks[self.i]

    def _take(self) -> _Token:
        tok = self.toks[self.i]
        if tok.kind != _EOF:
            self.i += 1
        return tok

    def _expect(self, kind: str, what: str) -> _Token:
        tok = self._take()
        if tok.kind != kind:
            raise SieveError(f"expected {what}", tok.line)
        return tok

    def script(self) -> list[Command]:
        return self.commands_until(_EOF, depth=0)

    def commands_until(self, end: str, depth: int) -> list[Command]:
        out: list[Command] = []
        while self._peek().kind != end:
            if self._peek().kind == _EOF:
                raise SieveError("missing '}'", self._peek().line)
            out.append(self.command(depth))
        return out

    def command(self, depth: int) -> Command:
        tok = self._take()
        if tok.kind != _IDENT:
            raise SieveError("expected a command", tok.line)
        self.commands += 1
        if self.commands > self.limits.max_commands:
            raise SieveError("script has too many commands", tok.line)
        args, tests = self.arguments(depth)
        nxt = self._take()
        if nxt.kind == _SEMI:
            return Command(str(tok.value), args, tests, None, tok.line)
        if nxt.kind == _BLOCK_OPEN:
            # RFC 5228 does not bound nesting; we must (hostile scripts, recursion depth).
            if depth + 1 > self.limits.max_nesting:
                raise SieveError("blocks nested too deeply", nxt.line)
            block = self.commands_until(_BLOCK_CLOSE, depth + 1)
            self._take()
            return Command(str(tok.value), args, tests, block, tok.line)
        raise SieveError(f"expected ';' or '{{' after {tok.value}", nxt.line)

    def arguments(self, depth: int) -> tuple[list[Argument], list[Test]]:
        args: list[Argument] = []
        while True:
            tok = self._peek()
            if tok.kind == _TAG:
                self._take()
                args.append(Tag(str(tok.value)))
            elif tok.kind == _NUM:
                self._take()
                assert isinstance(tok.value, int)
                args.append(tok.value)
            elif tok.kind == _STR:
                self._take()
                args.append(StringList((str(tok.value),), True))
            elif tok.kind == _LIST_OPEN:
                args.append(self.string_list())
            else:
                break
            if len(args) > self.limits.max_arguments:
                raise SieveError("too many arguments", tok.line)
        tests: list[Test] = []
        tok = self._peek()
        if tok.kind == _IDENT:
            tests.append(self.test(depth + 1))
        elif tok.kind == _PAREN_OPEN:
            tests = self.test_list(depth + 1)
        return args, tests

    def string_list(self) -> StringList:
        open_tok = self._take()
        items: list[str] = []
        while True:
            tok = self._expect(_STR, "a string in the list")
            items.append(str(tok.value))
            if len(items) > self.limits.max_list_items:
                raise SieveError("string list too long", tok.line)
            sep = self._take()
            if sep.kind == _LIST_CLOSE:
                return StringList(tuple(items), False)
            if sep.kind != _COMMA:
                raise SieveError("expected ',' or ']' in string list", open_tok.line)

    def test(self, depth: int) -> Test:
        tok = self._take()
        if tok.kind != _IDENT:
            raise SieveError("expected a test", tok.line)
        if depth > self.limits.max_nesting:
            raise SieveError("tests nested too deeply", tok.line)
        args, tests = self.arguments(depth)
        return Test(str(tok.value), args, tests, tok.line)

    def test_list(self, depth: int) -> list[Test]:
        self._take()
        tests = [self.test(depth)]
        while True:
            tok = self._take()
            if tok.kind == _PAREN_CLOSE:
                return tests
            if tok.kind != _COMMA:
                raise SieveError("expected ',' or ')' in test list", tok.line)
            tests.append(self.test(depth))
            if len(tests) > self.limits.max_list_items:
                raise SieveError("test list too long", tok.line)


def parse(text: str | bytes, limits: SieveLimits | None = None) -> list[Command]:
    """The syntax tree of a script. Raises SieveError only."""
    limits = limits or SieveLimits()
    if isinstance(text, bytes):
        if len(text) > limits.max_script_size:
            raise SieveError(f"script larger than {limits.max_script_size} octets")
        try:
            text = text.decode("utf-8")  # RFC 5228 section 1: scripts are UTF-8
        except UnicodeDecodeError:
            raise SieveError("script is not valid UTF-8") from None
    if len(text.encode("utf-8", "surrogatepass")) > limits.max_script_size:
        raise SieveError(f"script larger than {limits.max_script_size} octets")
    if "\x00" in text:
        raise SieveError("NUL character in script")
    tokens = _Lexer(text, limits).tokens()
    return _Parser(tokens, limits).script()
