"""Sans-I/O SASL (RFC 4422) server mechanisms shared by SMTP, IMAP and POP3."""

from mailstead.proto.sasl.mechanisms import (
    SUPPORTED_MECHANISMS,
    Challenge,
    Done,
    Failed,
    SaslDecodeError,
    SaslServer,
    Step,
    decode_response,
    encode_challenge,
    parse_plain,
)

__all__ = [
    "SUPPORTED_MECHANISMS",
    "Challenge",
    "Done",
    "Failed",
    "SaslDecodeError",
    "SaslServer",
    "Step",
    "decode_response",
    "encode_challenge",
    "parse_plain",
]
