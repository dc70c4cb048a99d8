"""Sans-I/O SASL (RFC 4422) for SMTP, IMAP and POP3: the mechanisms and the one exchange that
carries them over a line protocol."""

from mailstead.proto.sasl.exchange import (
    AuthArgument,
    Authenticated,
    Cancelled,
    Continue,
    LineSasl,
    Malformed,
    Outcome,
    Rejected,
    SaslExchange,
    Unsupported,
    split_auth_argument,
)
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
    "AuthArgument",
    "Authenticated",
    "Cancelled",
    "Challenge",
    "Continue",
    "Done",
    "Failed",
    "LineSasl",
    "Malformed",
    "Outcome",
    "Rejected",
    "SaslDecodeError",
    "SaslExchange",
    "SaslServer",
    "Step",
    "Unsupported",
    "decode_response",
    "encode_challenge",
    "parse_plain",
    "split_auth_argument",
]
