"""Thunderbird autoconfig: the ``clientConfig`` version 1.1 document that Thunderbird (and K-9,
FairEmail, Evolution...) fetch from ``autoconfig.DOMAIN/mail/config-v1.1.xml`` and
``DOMAIN/.well-known/autoconfig/mail/config-v1.1.xml``.

Format: the Mozilla wiki "Thunderbird:Autoconfiguration:ConfigFileFormat". The username is the
placeholder ``%EMAILADDRESS%`` that the client replaces, so the document names no account and
answering it reveals nothing about which accounts exist.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from mailstead.web.client_settings import ClientSettings, Endpoint

CONTENT_TYPE = "application/xml; charset=utf-8"
_SOCKET_TYPES = {"ssl": "SSL", "starttls": "STARTTLS"}


def _server(parent: ET.Element, tag: str, endpoint: Endpoint) -> None:
    server = ET.SubElement(parent, tag, type=endpoint.protocol)
    ET.SubElement(server, "hostname").text = endpoint.host
    ET.SubElement(server, "port").text = str(endpoint.port)
    ET.SubElement(server, "socketType").text = _SOCKET_TYPES[endpoint.security]
    # Every listener requires TLS before AUTH, so the cleartext password travels encrypted.
    ET.SubElement(server, "authentication").text = "password-cleartext"
    ET.SubElement(server, "username").text = "%EMAILADDRESS%"


def autoconfig_xml(settings: ClientSettings) -> bytes:
    """The clientConfig document for ``settings.domain``: every enabled IMAP, POP3 and
    submission listener, best first (clients take the first one that works)."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=settings.domain)
    ET.SubElement(provider, "domain").text = settings.domain
    ET.SubElement(provider, "displayName").text = f"{settings.domain} mail ({settings.hostname})"
    ET.SubElement(provider, "displayShortName").text = settings.domain
    for endpoint in (*settings.imap, *settings.pop3):
        _server(provider, "incomingServer", endpoint)
    for endpoint in settings.smtp:
        _server(provider, "outgoingServer", endpoint)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body
