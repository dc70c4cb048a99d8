"""Outlook autodiscover: the POX form (``POST /autodiscover/autodiscover.xml``, the Exchange
2007 "Autodiscover for Outlook" schema) and the JSON form
(``/autodiscover/autodiscover.json?Email=...&Protocol=AutodiscoverV1``) that new Outlook asks
first to learn where the POX endpoint is.

The request body is hostile input: it is parsed with defusedxml, which refuses any DTD, entity
declaration or external reference (no billion laughs, no XXE), after a size check.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import defusedxml
import defusedxml.ElementTree as SafeET

from mailstead.web.client_settings import ClientSettings, Endpoint

CONTENT_TYPE = "application/xml; charset=utf-8"
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
# A real request is a few hundred bytes; anything much larger is not Outlook.
MAX_REQUEST = 16 * 1024
_TYPES = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}


class AutodiscoverError(ValueError):
    """The request cannot be answered; ``error_code`` is the autodiscover ErrorCode (600:
    invalid request, 601: the requested schema is not offered)."""

    def __init__(self, message: str, error_code: int = 600) -> None:
        super().__init__(message)
        self.error_code = error_code


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child(parent: ET.Element, name: str) -> ET.Element | None:
    found = [child for child in parent if _local(child.tag) == name]
    if len(found) > 1:
        raise AutodiscoverError(f"more than one {name} element")
    return found[0] if found else None


def parse_pox_request(body: bytes) -> str:
    """The EMailAddress of a POX request, unvalidated as an address (the caller parses it).
    Raises AutodiscoverError for anything that is not a well-formed Outlook request."""
    if len(body) > MAX_REQUEST:
        raise AutodiscoverError("request too large")
    if not body.strip():
        raise AutodiscoverError("empty request")
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True,
                                 forbid_external=True)
    except (ET.ParseError, defusedxml.DefusedXmlException, ValueError, UnicodeError):
        raise AutodiscoverError("the request is not well-formed XML without a DTD") from None
    if root.tag != f"{{{REQUEST_NS}}}Autodiscover":
        raise AutodiscoverError("the root element is not the Outlook request schema's")
    request = _child(root, "Request")
    if request is None:
        raise AutodiscoverError("no Request element")
    schema = _child(request, "AcceptableResponseSchema")
    if schema is not None and (schema.text or "").strip() != OUTLOOK_NS:
        # e.g. the ActiveSync (mobilesync) schema: we do not offer it.
        raise AutodiscoverError("only the Outlook response schema is offered", 601)
    email = _child(request, "EMailAddress")
    if email is None or len(email) or not (email.text or "").strip():
        raise AutodiscoverError("no EMailAddress")
    return (email.text or "").strip()


def _protocol(account: ET.Element, endpoint: Endpoint, username: str) -> None:
    proto = ET.SubElement(account, "Protocol")
    ET.SubElement(proto, "Type").text = _TYPES[endpoint.protocol]
    ET.SubElement(proto, "Server").text = endpoint.host
    ET.SubElement(proto, "Port").text = str(endpoint.port)
    ET.SubElement(proto, "LoginName").text = username
    ET.SubElement(proto, "DomainRequired").text = "off"
    ET.SubElement(proto, "SPA").text = "off"  # plain password inside TLS, not NTLM
    ET.SubElement(proto, "SSL").text = "on"
    # Encryption overrides SSL: "SSL" is implicit TLS, "TLS" is STARTTLS.
    ET.SubElement(proto, "Encryption").text = "SSL" if endpoint.security == "ssl" else "TLS"
    ET.SubElement(proto, "AuthRequired").text = "on"
    if endpoint.protocol == "smtp":
        ET.SubElement(proto, "UsePOPAuth").text = "off"
        ET.SubElement(proto, "SMTPLast").text = "off"


def pox_response(settings: ClientSettings) -> bytes:
    """The Outlook response: one Protocol per type (IMAP, POP3, SMTP), the best endpoint of
    each, since Outlook uses only the first Protocol of a Type."""
    # Namespaces written as plain xmlns attributes, the form Exchange sends, rather than
    # generated prefixes (and without touching ElementTree's global prefix registry).
    root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
    response = ET.SubElement(root, "Response", xmlns=OUTLOOK_NS)
    account = ET.SubElement(response, "Account")
    ET.SubElement(account, "AccountType").text = "email"
    ET.SubElement(account, "Action").text = "settings"
    for endpoint in (settings.preferred("imap"), settings.preferred("pop3"),
                     settings.preferred("smtp")):
        if endpoint is not None:
            _protocol(account, endpoint, settings.username)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def pox_error(error: AutodiscoverError) -> bytes:
    """The autodiscover Error response, which Outlook shows instead of retrying blindly."""
    root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
    response = ET.SubElement(root, "Response")
    err = ET.SubElement(response, "Error", Id="0")
    ET.SubElement(err, "ErrorCode").text = str(error.error_code)
    ET.SubElement(err, "Message").text = str(error)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def json_response(pox_url: str) -> dict[str, Any]:
    """The AutodiscoverV1 JSON answer: where the POX endpoint is."""
    return {"Protocol": "AutodiscoverV1", "Url": pox_url}


def json_error(code: str, message: str) -> dict[str, Any]:
    """The error body Exchange sends for the JSON form (e.g. InvalidProtocol)."""
    return {"ErrorCode": code, "ErrorMessage": message}
