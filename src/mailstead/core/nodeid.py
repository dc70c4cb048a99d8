"""The name of this node: stable across restarts, different for every data directory.

Several nodes sharing one PostgreSQL store (issue 10) mark what they claim (queue rows) with
it, so a node starting after a crash knows which in-flight work was its own. It lives in
DATA/node-id, made at the first start; a copied data directory must get a new one (delete
the file), which the README says where it explains adding a node.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

FILE_NAME = "node-id"


def node_name(data_dir: Path) -> str:
    """DATA/node-id, created (``<hostname>-<random>``) when missing. Raises OSError."""
    path = data_dir / FILE_NAME
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    if text:
        return text[:200]
    host = socket.gethostname().split(".", 1)[0][:60] or "node"
    name = f"{host}-{secrets.token_hex(6)}"
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    tmp.write_text(name + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return name
