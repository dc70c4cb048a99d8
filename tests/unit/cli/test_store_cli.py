"""``mailstead store migrate`` run in-process: arguments, the printed summary and config lines,
``--switch`` rewriting only the [store] table, and progress lines on stderr."""

from __future__ import annotations

import io
import stat
import tomllib
from pathlib import Path

import pytest

from mailstead.cli.context import CommandError, Context
from mailstead.cli.main import main
from mailstead.cli.store import ProgressPrinter, switched_text
from mailstead.config import load_config
from mailstead.storage.transfer import TABLES, Progress
from pgserver import PgUnavailable, shared_server


def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), Context(io.StringIO(stdin), out, err, {}))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    code, _, err = run("init", "--data-dir", str(d), "--hostname", "mail.example.test",
                       "--domain", "example.test", "--dev")
    assert (code, err) == (0, "")
    code, _, err = run("user", "add", "alice@example.test", "--password-stdin",
                       "--data-dir", str(d), stdin="alice-Secret-1\n")
    assert (code, err) == (0, ""), err
    return d


@pytest.fixture
def dsn() -> str:
    try:
        return shared_server().new_database("cli")
    except PgUnavailable as exc:
        pytest.skip(str(exc))


def test_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--help")[0] == 0
    assert "store" in capsys.readouterr().out
    assert run("store", "--help")[0] == 0
    assert "migrate" in capsys.readouterr().out
    assert run("store", "migrate", "--help")[0] == 0
    text = capsys.readouterr().out
    for words in ("--to DSN", "--switch", "Stop `mailstead serve` first", "empty", "SHA-256"):
        assert words in text


def test_migrate_prints_the_config_lines(data_dir: Path, dsn: str) -> None:
    before = (data_dir / "mailstead.toml").read_text()
    code, out, err = run("store", "migrate", "--data-dir", str(data_dir), "--to", dsn)
    assert code == 0, err
    assert f"copied {len(TABLES)} tables" in out
    assert "1 account(s)" in out
    assert "verified:" in out
    assert f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n' in out
    assert (data_dir / "mailstead.toml").read_text() == before  # untouched without --switch
    assert err.startswith("mailstead: copying the store of")

    # A second run finds the database in use: one line saying what to do.
    code, out, err = run("store", "migrate", "--data-dir", str(data_dir), "--to", dsn)
    assert (code, out) == (1, "")
    assert err.splitlines()[-1].startswith("mailstead: the PostgreSQL database is not empty")
    assert "createdb" in err


def test_switch_rewrites_the_store_table(data_dir: Path, dsn: str) -> None:
    path = data_dir / "mailstead.toml"
    before = path.read_text()
    code, out, err = run("store", "migrate", "--data-dir", str(data_dir), "--to", dsn,
                         "--switch")
    assert code == 0, err
    assert "now uses PostgreSQL" in out
    config = load_config(data_dir)
    assert (config.store.backend, config.store.dsn) == ("postgresql", dsn)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    changed = [(a, b) for a, b in zip(before.splitlines(), path.read_text().splitlines(),
                                      strict=True) if a != b]
    assert changed == [('# backend = "sqlite"', 'backend = "postgresql"'),
                       ('# dsn = ""', f'dsn = "{dsn}"')]

    code, _, err = run("store", "migrate", "--data-dir", str(data_dir), "--to", dsn)
    assert code == 1
    assert "already uses PostgreSQL" in err


def test_bad_targets_are_one_line_errors(data_dir: Path) -> None:
    code, _, err = run("store", "migrate", "--data-dir", str(data_dir), "--to", "mysql://x/y")
    assert (code, err) == (
        1, 'mailstead: --to: expected a URI like postgresql://USER@HOST/DATABASE, got '
        '"mysql://x/y"\n'
    )
    code, _, err = run("store", "migrate", "--data-dir", str(data_dir),
                       "--to", "postgresql://u:hunter2@127.0.0.1:1/db")
    assert code == 1
    assert "cannot connect to PostgreSQL at postgresql://u@127.0.0.1:1/db" in err
    assert "hunter2" not in err


def test_switched_text_variants() -> None:
    dsn = "postgresql://m@db.test/mail"
    # No [store] table: one is appended, everything else kept.
    text = 'hostname = "m.test"\n\n[listen]\nsmtp = "127.0.0.1:25"  # port 25\n'
    new = switched_text(text, dsn)
    assert new.startswith(text)
    assert tomllib.loads(new)["store"] == {"backend": "postgresql", "dsn": dsn}
    # Active lines are replaced in place, other keys and comments stay.
    text = ('[store]\n# where\nbackend = "sqlite"\npool_size = 4\n\n[dns]\n'
            '# dsn = "not this table"\n')
    new = switched_text(text, dsn)
    assert new == ('[store]\n# where\nbackend = "postgresql"\ndsn = "' + dsn + '"\n'
                   'pool_size = 4\n\n[dns]\n# dsn = "not this table"\n')
    # A store set with dotted keys or an inline table is left for the administrator.
    with pytest.raises(CommandError, match="edit it by hand"):
        switched_text('store = { backend = "sqlite" }\n', dsn)
    with pytest.raises(CommandError, match="control characters"):
        switched_text("[store]\n", "postgresql://m@db.test/mail\n")


def test_progress_lines_are_throttled() -> None:
    now = [0.0]
    out = io.StringIO()
    printer = ProgressPrinter(out, clock=lambda: now[0])
    printer(Progress("copying", "messages", 100, 1000))  # too soon after the start
    now[0] = 2.5
    printer(Progress("copying", "blobs", 10, 40, 1 << 20, 4 << 20))
    printer(Progress("copying", "blobs", 20, 40, 2 << 20, 4 << 20))  # too soon
    printer(Progress("copying", "blobs", 40, 40, 4 << 20, 4 << 20))  # the end of a shown step
    now[0] = 5.0
    printer(Progress("copying", "leases", 0, 0))  # nothing to say about an empty table
    assert out.getvalue().splitlines() == [
        "mailstead: copying blobs: 10/40 rows (1.0 MiB of 4.0 MiB)",
        "mailstead: copying blobs: 40/40 rows (4.0 MiB of 4.0 MiB)",
    ]
