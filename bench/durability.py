"""SIGKILL durability check: every message acknowledged with 250 must be in the store.

Starts ``mailstead serve``, loads port 25 with concurrent clients sending distinct messages
(each with a unique token), SIGKILLs the server mid-load, starts it again (crash recovery),
and checks each acknowledged message byte for byte (the bytes after our Received: header).

    python bench/durability.py [--clients 20] [--kill-after 1.5] [--no-restart] [--data-dir D]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests" / "integration")]

from helpers import durability_check  # noqa: E402 (the path set-up above must come first)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--kill-after", type=float, default=1.5, help="seconds of load")
    parser.add_argument("--no-restart", action="store_true",
                        help="only reopen the store after the kill, do not serve again")
    parser.add_argument("--data-dir", type=Path,
                        help="must not exist or be empty; default: a temporary directory")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mailstead-durability-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        result = durability_check(data_dir, clients=args.clients, kill_after=args.kill_after,
                                  restart=not args.no_restart)
    check = result.verification
    print(f"sent {result.stats.sent} transactions, errors {result.stats.errors} "
          f"(connections cut by the kill), restarted: {result.restarted}")
    print(check.summary())
    for token in (check.missing + check.corrupt)[:10]:
        print(f"  lost or changed: {token}")
    return 0 if check.acknowledged and not check.missing and not check.corrupt else 1


if __name__ == "__main__":
    raise SystemExit(main())
