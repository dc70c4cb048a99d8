"""The ``mailstead`` command: argument parsing and error reporting; the work is done by the
services (DESIGN: the CLI holds no business logic).

Every failure an administrator can cause ends as one line on stderr and exit code 1; usage
errors exit 2 as with every argparse program; a traceback is shown only with MAILSTEAD_DEBUG=1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from mailstead import __version__
from mailstead.cli import admin, apppasswords, card, dkim, dns, security, twofactor
from mailstead.cli import backup as backup_cli
from mailstead.cli import importing as importing_cli
from mailstead.cli import queue as queue_cli
from mailstead.cli import sieve as sieve_cli
from mailstead.cli import store as store_cli
from mailstead.cli import tlsrpt as tlsrpt_cli
from mailstead.cli.check_client import register as register_check_client
from mailstead.cli.context import ENV_DATA_DIR, Context, real_context
from mailstead.cli.doctor import register as register_doctor
from mailstead.cli.init import init
from mailstead.config.loader import load_config
from mailstead.config.template import DEV_PORTS
from mailstead.core.errors import MailsteadError

Command = Callable[[Context, argparse.Namespace], int]

DESCRIPTION = """\
Mailstead: a complete, self-hosted email server (SMTP, submission, IMAP, POP3) in one program.
All state lives in one data directory: DATA/mailstead.toml (configuration), the store and
DATA/tls/. Every command takes --data-dir DIR, or reads $MAILSTEAD_DATA_DIR."""

EPILOG = """\
first steps:
  mailstead init --data-dir /var/lib/mailstead --hostname mail.example.org --domain example.org
  mailstead user add you@example.org --data-dir /var/lib/mailstead
  mailstead serve --data-dir /var/lib/mailstead

The administration commands work while the server runs. Use 'mailstead COMMAND --help' for
the details of each command."""


def serve(ctx: Context, args: argparse.Namespace) -> int:
    from mailstead.app import serve as app_serve

    return app_serve(load_config(ctx.existing_data_dir(args.data_dir)))


def _data_dir_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--data-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"the data directory (default: ${ENV_DATA_DIR})",
    )
    return parent


def _password_stdin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (for scripts); "
        "without it the password is asked twice on the terminal",
    )


def _add(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    command: Command,
    help_text: str,
    **kwargs: str,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=help_text,
        description=kwargs.pop("description", help_text),
        parents=[_data_dir_parent()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,  # type: ignore[arg-type]
    )
    parser.set_defaults(command=command)
    return parser


def _group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(title="commands", metavar="COMMAND", required=True)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; kept in one place so --help stays consistent."""
    parser = argparse.ArgumentParser(
        prog="mailstead",
        description=DESCRIPTION,
        epilog=EPILOG,
        parents=[_data_dir_parent()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mailstead {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    p = _add(
        sub,
        "init",
        init,
        "create a new data directory",
        description="Create a data directory: a commented mailstead.toml (mode 0600), the "
        "store with DOMAIN as a local domain, and a self-signed certificate for HOSTNAME in "
        "DIR/tls/. Refuses a directory that is not empty. With --store postgresql://..., the "
        "store is that database; a database another node initialised is joined, and the "
        "new node needs the installation's security key (which protects second factors and "
        "app passwords): give --key-file or --key-passphrase-stdin, or fetch it later with "
        "`mailstead security fetch-key`.",
        epilog="examples:\n  mailstead init --data-dir /var/lib/mailstead "
        "--hostname mail.example.org --domain example.org\n"
        "  # a second node, after `mailstead security share-key --passphrase-stdin` on the "
        "first:\n  mailstead init --data-dir /var/lib/mailstead --hostname mx2.example.org "
        "--domain example.org \\\n      --store postgresql://mailstead@db.example.org/mailstead "
        "--key-passphrase-stdin < passphrase.txt",
    )
    p.add_argument("--hostname", required=True, help="this server's name, e.g. mail.example.org")
    p.add_argument("--domain", required=True, help="the first mail domain, e.g. example.org")
    p.add_argument(
        "--dev",
        action="store_true",
        help="listen on 127.0.0.1 on unprivileged ports ("
        + ", ".join(f"{name} {port}" for name, port in DEV_PORTS.items())
        + ") instead of the standard ports on all addresses",
    )
    p.add_argument(
        "--store",
        metavar="STORE",
        help='where the state lives: "sqlite" (default, embedded in DIR) or a PostgreSQL URI '
        "such as postgresql://mailstead@db.example.org/mailstead, shared by several nodes "
        "(written to [store] in mailstead.toml)",
    )
    key = p.add_mutually_exclusive_group()
    key.add_argument(
        "--key-file",
        metavar="FILE",
        help="joining an installation: a copy of security.key from one of its nodes (it must "
        "match the installation's key recorded in the store)",
    )
    key.add_argument(
        "--key-passphrase-stdin",
        action="store_true",
        help="joining an installation: read from standard input the passphrase of the key an "
        "admin shared in the store (mailstead security share-key)",
    )

    _add(
        sub,
        "serve",
        serve,
        "run the mail server",
        description="Run the server in the foreground with DIR/mailstead.toml until stopped "
        "(SIGTERM or Ctrl-C). Logs go to standard error.",
    )

    domains = _group(sub, "domain", "manage the local mail domains")
    p = _add(domains, "add", admin.domain_add, "accept mail for a domain")
    p.add_argument("name", metavar="NAME", help="the domain, e.g. example.org")
    _add(domains, "list", admin.domain_list, "print the local domains, one per line")
    p = _add(
        domains,
        "remove",
        admin.domain_remove,
        "stop accepting mail for a domain",
        description="Remove a local domain; refused while it still has users or aliases.",
    )
    p.add_argument("name", metavar="NAME")

    users = _group(sub, "user", "manage mail accounts")
    p = _add(
        users,
        "add",
        admin.user_add,
        "create an account",
        description="Create an account with its mailboxes (INBOX, Drafts, Sent, Junk, Trash, "
        "Archive). The domain must be local; the password needs at least 8 characters.",
        epilog="example:\n  echo 'long secret words' | mailstead user add alice@example.org "
        "--password-stdin --quota 2G",
    )
    p.add_argument("address", metavar="ADDRESS", help="the full address, e.g. alice@example.org")
    _password_stdin(p)
    admin.admin_flag(p)
    p = _add(users, "list", admin.user_list, "print the accounts, one address per line")
    p.add_argument("--domain", metavar="D", help="only the accounts of domain D")
    p.add_argument("-l", "--long", action="store_true",
                   help="with each account's storage use and quota")
    p = _add(users, "passwd", admin.user_passwd, "change the password of an account")
    p.add_argument("address", metavar="ADDRESS")
    _password_stdin(p)
    p = _add(users, "remove", admin.user_remove, "delete an account and all its mail")
    p.add_argument("address", metavar="ADDRESS")
    admin.register(users, _add)
    twofactor.register(users, _add, _group)
    apppasswords.register(sub, _add, _group)
    security.register(sub, _add, _group)

    aliases = _group(sub, "alias", "manage forwarding addresses")
    p = _add(
        aliases,
        "add",
        admin.alias_add,
        "forward an address to other addresses",
        description="Forward mail for SOURCE to each TARGET (which may be on other servers). "
        "SOURCE '@example.org' is a catch-all: every address of the domain without an account "
        "or a more specific alias. Adding to an existing alias adds targets.",
        epilog="examples:\n  mailstead alias add postmaster@example.org alice@example.org\n"
        "  mailstead alias add @example.org alice@example.org",
    )
    p.add_argument("source", metavar="SOURCE", help="local@domain, or @domain for a catch-all")
    p.add_argument("targets", metavar="TARGET", nargs="+", help="addresses to deliver to")
    _add(aliases, "list", admin.alias_list, "print the aliases as 'SOURCE -> TARGETS'")
    p = _add(
        aliases,
        "remove",
        admin.alias_remove,
        "remove an alias, or some of its targets",
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("targets", metavar="TARGET", nargs="*", help="only these targets")

    keys = _group(sub, "dkim", "manage the DKIM signing keys of a domain")
    p = _add(keys, "list", dkim.dkim_list, "print the DKIM keys of a domain and their state")
    p.add_argument("domain", metavar="DOMAIN")
    p = _add(
        keys,
        "rotate",
        dkim.dkim_rotate,
        "create a new DKIM key pair (RSA and Ed25519) for a domain",
        description="Create a new RSA-2048 and Ed25519 key for DOMAIN and print their DNS "
        "records. They sign only after 'mailstead dkim activate DOMAIN' (publish them first), "
        "or at once with --activate or when no key signs yet. Old keys stay published.",
    )
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument("--activate", action="store_true", help="sign with the new keys at once")
    p = _add(
        keys,
        "activate",
        dkim.dkim_activate,
        "choose the DKIM keys that sign a domain's mail",
        description="Sign DOMAIN's mail with exactly the given selectors (default: the newest "
        "key of each algorithm); the others stay published but stop signing.",
    )
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument("selectors", metavar="SELECTOR", nargs="*")
    dkim.register_remove(keys, _add)

    queue_cli.register(sub, _add, _group)
    sieve_cli.register(sub, _add, _group)
    store_cli.register(sub, _add, _group)
    tlsrpt_cli.register(sub, _add, _group)
    importing_cli.register(sub, _add, _group)
    backup_cli.register(sub, _add)
    register_doctor(sub, _add)
    register_check_client(sub, _add)

    p = _add(
        sub,
        "dns",
        dns.dns,
        "print the DNS records a domain must publish",
        description="Print, in zone-file syntax, every record DOMAIN needs: MX, SPF, DKIM, "
        "DMARC, MTA-STS (and the policy file to serve), TLS-RPT, SRV records for mail "
        "clients, autoconfig names, and the reverse DNS (PTR) the hosting provider must set.",
    )
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument(
        "--address",
        metavar="IP",
        action="append",
        help="a public address of this server (repeatable), for the A/AAAA and PTR records",
    )

    for name, help_text in (
        ("client-setup", "print the mail client settings of an account"),
        ("card", "the same as client-setup (its older name)"),
    ):
        p = _add(
            sub,
            name,
            card.client_setup,
            help_text,
            description="Print what to type into a mail client (Thunderbird, Apple Mail, "
            "K-9...) for ADDRESS: servers, ports and security for IMAP, POP3 and SMTP, from "
            "this installation's configuration. With --mobileconfig FILE, also write an Apple "
            "configuration profile (signed when the certificate is not self-signed). The same "
            "card is served at https://HOSTNAME/setup?email=ADDRESS.",
        )
        card.register(p)
    return parser


def main(argv: Sequence[str] | None = None, ctx: Context | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 failed, 2 bad usage)."""
    context = ctx or real_context()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 2
    if not hasattr(args, "data_dir"):
        args.data_dir = None
    command: Command = args.command
    try:
        return command(context, args)
    except KeyboardInterrupt:
        print("mailstead: interrupted", file=context.stderr)
        return 130
    except (MailsteadError, OSError) as exc:
        if context.environ.get("MAILSTEAD_DEBUG"):
            raise
        print(f"mailstead: {_one_line(exc)}", file=context.stderr)
        return 1
    except Exception as exc:
        if context.environ.get("MAILSTEAD_DEBUG"):
            raise
        print(
            f"mailstead: unexpected error: {type(exc).__name__}: {_one_line(exc)} "
            "(set MAILSTEAD_DEBUG=1 for details)",
            file=context.stderr,
        )
        return 1


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
