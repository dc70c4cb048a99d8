from __future__ import annotations

import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest
from webtestlib import HOSTNAME, make_config

from mailstead.config.model import HostPort, ListenConfig
from mailstead.web.client_settings import client_settings
from mailstead.web.mobileconfig import ProfileError, ProfileSigner, build_profile, profile_uuids


def test_profile_as_ios_reads_it(tmp_path: Path) -> None:
    settings = client_settings(make_config(tmp_path), "alice@example.test")
    profile = plistlib.loads(build_profile(settings))
    assert profile["PayloadType"] == "Configuration"
    assert profile["PayloadVersion"] == 1
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert mail["EmailAddress"] == "alice@example.test"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
            mail["IncomingMailServerUseSSL"]) == (HOSTNAME, 993, True)
    assert (mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"],
            mail["OutgoingMailServerUseSSL"]) == (HOSTNAME, 465, True)
    assert mail["IncomingMailServerUsername"] == "alice@example.test"
    assert mail["OutgoingMailServerUsername"] == "alice@example.test"
    assert mail["IncomingMailServerAuthentication"] == "EmailAuthPassword"
    assert mail["OutgoingMailServerAuthentication"] == "EmailAuthPassword"
    assert "IncomingPassword" not in mail  # the password is never in the profile


def test_uuids_are_stable_per_account_and_host(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    one = plistlib.loads(build_profile(client_settings(config, "alice@example.test")))
    two = plistlib.loads(build_profile(client_settings(config, "alice@example.test")))
    other = plistlib.loads(build_profile(client_settings(config, "bob@example.test")))
    assert one["PayloadUUID"] == two["PayloadUUID"]
    assert one["PayloadIdentifier"] == two["PayloadIdentifier"]
    assert one["PayloadContent"][0]["PayloadUUID"] == two["PayloadContent"][0]["PayloadUUID"]
    assert one["PayloadUUID"] != other["PayloadUUID"]
    assert one["PayloadUUID"] != one["PayloadContent"][0]["PayloadUUID"]
    assert profile_uuids("a@x.test", "h1.test") != profile_uuids("a@x.test", "h2.test")


def test_no_profile_without_imap(tmp_path: Path) -> None:
    config = make_config(tmp_path, ListenConfig(pop3s=HostPort("0.0.0.0", 995),
                                               submissions=HostPort("0.0.0.0", 465)))
    with pytest.raises(ProfileError, match="IMAP"):
        build_profile(client_settings(config, "a@example.test"))


def test_self_signed_certificate_leaves_the_profile_unsigned(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    plist = build_profile(client_settings(config, "a@example.test"))
    signer = ProfileSigner(config.tls.cert, config.tls.key)
    assert not signer.will_sign()
    assert signer.sign(plist).data == plist


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_ca_signed_profile_verifies_with_openssl(tmp_path: Path) -> None:
    config = make_config(tmp_path, ca_signed=True)
    plist = build_profile(client_settings(config, "a@example.test"))
    signer = ProfileSigner(config.tls.cert, config.tls.key)
    assert signer.will_sign()
    signed = signer.sign(plist)
    assert signed.signed
    assert signed.data != plist
    (tmp_path / "p.der").write_bytes(signed.data)
    proc = subprocess.run(
        ["openssl", "smime", "-verify", "-inform", "der", "-in", str(tmp_path / "p.der"),
         "-CAfile", str(tmp_path / "ca.pem"), "-purpose", "any", "-binary"],
        capture_output=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == plist
    assert plistlib.loads(proc.stdout)["PayloadType"] == "Configuration"


def test_signer_notices_a_replaced_key_that_does_not_match(tmp_path: Path) -> None:
    config = make_config(tmp_path, ca_signed=True)
    signer = ProfileSigner(config.tls.cert, config.tls.key)
    assert signer.will_sign()
    other = tmp_path / "other"
    other.mkdir()
    make_config(other, ca_signed=True)
    config.tls.key.write_bytes((other / "key.pem").read_bytes() + b"\n")  # size changes
    assert not signer.will_sign()
    assert not signer.sign(b"x").signed
