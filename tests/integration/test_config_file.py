"""The mailstead.toml that ``init`` writes documents every default as a commented TOML line;
a server runs on the file with every one of those lines uncommented."""

from __future__ import annotations

import imaplib
import re
import uuid
from pathlib import Path

from helpers import DOMAIN, Harness, Server, Users, init_data_dir, make_message

ADDRESS = f"uncommented@{DOMAIN}"
PASSWORD = "Uncommented-pass-42"


def test_server_runs_with_every_default_uncommented(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, Users({ADDRESS: PASSWORD}))
    path = data_dir / "mailstead.toml"
    text = path.read_text(encoding="utf-8")
    setting = re.compile(r"^# ([a-z_]+ = .*)$", re.MULTILINE)
    assert len(setting.findall(text)) > 50, text
    path.write_text(setting.sub(r"\1", text), encoding="utf-8")
    assert not setting.search(path.read_text(encoding="utf-8"))

    server = Server(data_dir).start()
    try:
        harness = Harness(server)
        token = uuid.uuid4().hex
        with harness.client("smtp") as smtp:
            smtp.sendmail("sender@remote.test", [ADDRESS], make_message(token, to=ADDRESS))
        assert len(harness.find(ADDRESS, token)) == 1  # delivered before the 250
        with imaplib.IMAP4_SSL("127.0.0.1", harness.port("imaps"), ssl_context=harness.tls(),
                               timeout=15) as imap:
            imap.login(ADDRESS, PASSWORD)
            assert imap.select("INBOX")[0] == "OK"
    finally:
        assert server.stop() == 0
