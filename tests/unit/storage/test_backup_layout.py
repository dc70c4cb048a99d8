"""The pure pieces of backups: the manifest round-trip, hostile manifests (restore never
writes outside its directory), snapshot picking, and the file and body checks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.storage import backup as layout
from mailstead.storage.backup import BackupError, CheckReport, FileEntry, Manifest
from mailstead.storage.sqlite.backup import restore_backup

H = hashlib.sha256(b"x").hexdigest()


def _manifest(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format": layout.FORMAT,
        "created": "2026-12-07T17:00:00Z",
        "backend": "sqlite",
        "program_version": "1.0",
        "schema_version": 12,
        "counts": {"accounts": 2, "messages": 5},
        "files": {"mailstead.db": {"sha256": H, "size": 1}},
    }
    data.update(over)
    return data


def test_postgresql_manifest_keeps_its_table_order() -> None:
    m = Manifest("t", "postgresql", "1", 3, {"blobs": 1},
                 [FileEntry("database/domains.copy", H, 1)], tables=["domains", "accounts"])
    assert Manifest.from_json(m.to_json()).tables == ["domains", "accounts"]
    assert "tables" not in json.loads(Manifest("t", "sqlite", "1", 3, {}).to_json())


@pytest.mark.parametrize("tables", [["../etc"], ["a/b"], [1], "accounts", ["A"], [""]])
def test_hostile_table_names_are_refused(tables: Any) -> None:
    with pytest.raises(BackupError, match="tables are malformed"):
        Manifest.from_json(json.dumps(_manifest(tables=tables)))


def test_manifest_round_trip() -> None:
    m = Manifest(
        created="2026-12-07T17:00:00Z", backend="sqlite", program_version="1.2.3",
        schema_version=14, counts={"messages": 3, "accounts": 1},
        files=[FileEntry("mailstead.db", H, 10), FileEntry("files/tls/key.pem", "0" * 64, 0)],
    )
    back = Manifest.from_json(m.to_json())
    assert back == m
    assert json.loads(m.to_json())["files"]["files/tls/key.pem"] == {"sha256": "0" * 64,
                                                                     "size": 0}


@pytest.mark.parametrize(("text", "reason"), [
    ("{not json", "not valid JSON"),
    ("[]", "unknown format"),
    (json.dumps(_manifest(format=99)), "unknown format"),
    (json.dumps({k: v for k, v in _manifest().items() if k != "files"}), "malformed"),
    (json.dumps({k: v for k, v in _manifest().items() if k != "counts"}), "malformed"),
    (json.dumps(_manifest(files=[])), "must be JSON objects"),
    (json.dumps(_manifest(counts=[["messages", 1]])), "must be JSON objects"),
    (json.dumps(_manifest(files={"a": "b"})), "malformed"),
    (json.dumps(_manifest(files={"a": {"sha256": "zz", "size": 1}})), "malformed"),
    (json.dumps(_manifest(files={"a": {"sha256": H, "size": -1}})), "malformed"),
    (json.dumps(_manifest(files={"a": {"sha256": H, "size": "big"}})), "malformed"),
    (json.dumps(_manifest(schema_version="twelve")), "malformed"),
    (json.dumps(_manifest(counts={"messages": None})), "malformed"),
    (json.dumps(_manifest(files={"/etc/passwd": {"sha256": H, "size": 1}})), "unsafe"),
    (json.dumps(_manifest(files={"files/../../x": {"sha256": H, "size": 1}})), "unsafe"),
    (json.dumps(_manifest(files={"files/./x": {"sha256": H, "size": 1}})), "unsafe"),
    (json.dumps(_manifest(files={"files//x": {"sha256": H, "size": 1}})), "unsafe"),
    (json.dumps(_manifest(files={"files\\..\\x": {"sha256": H, "size": 1}})), "unsafe"),
    (json.dumps(_manifest(files={"a\x00b": {"sha256": H, "size": 1}})), "unsafe"),
    (json.dumps(_manifest(files={"": {"sha256": H, "size": 1}})), "unsafe"),
])
def test_malformed_manifests_are_one_clear_error(text: str, reason: str) -> None:
    with pytest.raises(BackupError, match=reason):
        Manifest.from_json(text)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(_manifest())), _json, max_size=8))
def test_any_json_gives_a_manifest_or_a_backup_error(fields: dict[str, Any]) -> None:
    data = {**_manifest(), **fields}
    try:
        m = Manifest.from_json(json.dumps(data))
    except BackupError:
        return
    for entry in m.files:
        layout.check_relative(entry.path)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_manifest_or_a_backup_error(raw: bytes) -> None:
    with contextlib.suppress(BackupError):
        Manifest.from_json(raw.decode("utf-8", "replace"))


_segment = st.sampled_from(["..", ".", "", "a", "files", "tls", "mailstead.db", "blobs",
                            "tmp", "x\\y", "/", "é"])


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(_segment, min_size=1, max_size=6), absolute=st.booleans())
def test_restore_never_writes_outside_its_directory(
    parts: list[str], absolute: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path_factory.mktemp("restore") / "dir"
    path = ("/" if absolute else "") + "/".join(parts)
    try:
        target = layout.restore_target(data_dir, path)
    except BackupError:
        return
    assert target.resolve().is_relative_to(data_dir.resolve())
    assert target != data_dir
    assert path == layout.DATABASE or path.startswith("files/")


def test_restore_targets() -> None:
    d = Path("/srv/restore")
    assert layout.restore_target(d, "mailstead.db") == d / "mailstead.db"
    assert layout.restore_target(d, "files/tls/cert.pem") == d / "tls" / "cert.pem"
    for bad in ("files/mailstead.db", "files/blobs/ab/cd/x", "files/tmp/x",
                "manifest.json", "other/x", "files/../x", "../x", "/x"):
        with pytest.raises(BackupError):
            layout.restore_target(d, bad)


def test_a_symlink_in_the_snapshot_is_a_fault(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"x")
    snap = tmp_path / "snap"
    (snap / "files").mkdir(parents=True)
    os.symlink(secret, snap / "files" / "security.key")
    m = Manifest("t", "sqlite", "1", 1, {}, [FileEntry("files/security.key", H, 1)])
    report = CheckReport("snap")
    layout.check_files(snap, m, report)
    assert report.bad_files == ["files/security.key: a symbolic link, not a file"]
    assert not report.ok


def test_check_files_finds_missing_changed_and_good(tmp_path: Path) -> None:
    (tmp_path / "good").write_bytes(b"x")
    (tmp_path / "changed").write_bytes(b"y")
    m = Manifest("t", "sqlite", "1", 1, {}, [
        FileEntry("good", H, 1), FileEntry("changed", H, 1), FileEntry("gone", H, 1)])
    report = CheckReport("s")
    layout.check_files(tmp_path, m, report)
    assert report.files == 3
    assert report.bad_files == ["changed: SHA-256 or size differs from the manifest",
                                "gone: missing"]


def test_check_blobs_finds_missing_damaged_and_bad_names(tmp_path: Path) -> None:
    good, flipped = b"body one", b"body two"
    names = [hashlib.sha256(good).hexdigest(), hashlib.sha256(flipped).hexdigest(), "f" * 64,
             "../../etc/passwd"]
    for name, data in ((names[0], good), (names[1], b"body twO")):
        path = layout.blob_path(tmp_path, name)
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    report = CheckReport("s")
    layout.check_blobs(tmp_path, names, report)
    assert report.blobs == 4
    assert report.missing == ["f" * 64]
    assert report.damaged == [names[1], "../../etc/passwd"]


def test_snapshot_picking(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no complete backup"):
        layout.pick_snapshot(tmp_path, None)
    root = tmp_path / layout.SNAPSHOTS
    for name in ("20261207T170000.000001Z", "20261207T180000Z", "20251231T235959.999999Z",
                 ".partial-20261208T000000Z.abcd", "not-a-snapshot", "20261209T000000Z"):
        (root / name).mkdir(parents=True)
    (root / "20261210T000000Z").write_bytes(b"a file, not a snapshot")
    assert layout.snapshots(tmp_path) == [
        "20251231T235959.999999Z", "20261207T170000.000001Z", "20261207T180000Z",
        "20261209T000000Z"]
    assert layout.pick_snapshot(tmp_path, None) == root / "20261209T000000Z"
    assert layout.pick_snapshot(tmp_path, "20261207T180000Z") == root / "20261207T180000Z"
    for name in (".partial-20261208T000000Z.abcd", "../..", "20261210T000000Z"):
        with pytest.raises(BackupError, match="has no snapshot"):
            layout.pick_snapshot(tmp_path, name)


def test_data_files_leave_out_the_store(tmp_path: Path) -> None:
    for rel in ("mailstead.toml", "security.key", "tls/cert.pem", "mailstead.db",
                "mailstead.db-wal", "blobs/ab/cd/x", "tmp/spool1", "dkim/a.key"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    os.symlink(tmp_path / "security.key", tmp_path / "link.key")
    got = [p.relative_to(tmp_path).as_posix() for p in layout.data_files(tmp_path)]
    assert got == ["mailstead.toml", "security.key", "dkim/a.key", "tls/cert.pem"]


def test_write_durable_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    layout.write_durable(target, b"one", 0o640)
    layout.write_durable(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["f"]
    assert layout.sha256_file(target) == (hashlib.sha256(b"two").hexdigest(), 3)


@pytest.mark.parametrize("hostile", ["files/mailstead.db", "files/blobs/ab/cd/x", "other"])
def test_restore_refuses_a_hostile_manifest_before_writing(tmp_path: Path, hostile: str) -> None:
    snap = tmp_path / "backup" / layout.SNAPSHOTS / "20261207T170000Z"
    (snap / "files").mkdir(parents=True)
    (snap / "mailstead.db").write_bytes(b"x")
    m = Manifest("t", "sqlite", "1", 1, {}, [FileEntry("mailstead.db", H, 1),
                                              FileEntry(hostile, H, 1)])
    (snap / layout.MANIFEST).write_text(m.to_json())
    target = tmp_path / "restored"
    with pytest.raises(BackupError, match="manifest"):
        restore_backup(tmp_path / "backup", target)
    assert not target.exists()
