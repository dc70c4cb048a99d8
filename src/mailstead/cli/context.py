"""What every command needs from the outside world, injected so tests can run commands
in-process against a store of their own and captured streams."""

from __future__ import annotations

import getpass
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from mailstead.config.model import CONFIG_FILE_NAME
from mailstead.core.errors import ConfigError
from mailstead.core.secret import Secret
from mailstead.storage.interfaces import Store

StoreOpener = Callable[[Path], Awaitable[Store]]
ENV_DATA_DIR = "MAILSTEAD_DATA_DIR"


async def default_open_store(data_dir: Path) -> Store:
    """The real store of ``data_dir``; imported late so the CLI starts fast."""
    from mailstead.storage import open_store

    store: Store = await open_store(data_dir)
    return store


class CommandError(ConfigError):
    """An administrator's mistake on the command line; printed as one line, exit code 1."""


@dataclass
class Context:
    """Streams, environment and store factory of one CLI run."""

    stdin: TextIO
    stdout: TextIO
    stderr: TextIO
    environ: Mapping[str, str]
    open_store: StoreOpener = default_open_store
    getpass: Callable[[str], str] = field(default=getpass.getpass)

    def out(self, text: str) -> None:
        print(text, file=self.stdout)

    def data_dir(self, given: str | None) -> Path:
        """``--data-dir``, else $MAILSTEAD_DATA_DIR, else an error naming both."""
        value = given or self.environ.get(ENV_DATA_DIR)
        if not value:
            raise CommandError(f"no data directory: pass --data-dir DIR or set {ENV_DATA_DIR}")
        return Path(value).expanduser()

    def existing_data_dir(self, given: str | None) -> Path:
        """The data directory, which must hold a mailstead.toml: a mistyped path must not
        silently create a new empty store."""
        path = self.data_dir(given)
        if not (path / CONFIG_FILE_NAME).is_file():
            raise CommandError(
                f"{path} is not a Mailstead data directory (no {CONFIG_FILE_NAME}); "
                "create one with: mailstead init"
            )
        return path

    def read_password(self, from_stdin: bool) -> Secret:
        """One line from stdin with ``--password-stdin``; else, on a terminal, ask twice."""
        if from_stdin:
            line = self.stdin.readline()
            if line.endswith("\n"):
                line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
            if not line:
                raise CommandError("no password on standard input")
            return Secret(line)
        if not self.stdin.isatty():
            raise CommandError(
                "standard input is not a terminal: pass the password with --password-stdin"
            )
        first = self.getpass("New password: ")
        second = self.getpass("Repeat password: ")
        if first != second:
            raise CommandError("the two passwords differ; nothing was changed")
        return Secret(first)


def real_context() -> Context:
    """The context of a real command-line run."""
    import sys

    return Context(sys.stdin, sys.stdout, sys.stderr, os.environ)
