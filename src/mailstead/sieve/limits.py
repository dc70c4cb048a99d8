"""The hard limits every Sieve script and run is held to (``[sieve]`` in the config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SieveLimits:
    """Bounds that keep a hostile script from costing unbounded memory or time."""

    max_script_size: int = 64 * 1024  # octets of one script
    max_string: int = 16 * 1024  # characters of one string literal or variable value
    max_identifier: int = 64
    max_tokens: int = 20_000
    max_commands: int = 2_000
    max_nesting: int = 15  # block and test nesting depth
    max_arguments: int = 32  # arguments of one command or test
    max_list_items: int = 256  # strings in one list, tests in one allof/anyof
    max_actions: int = 32  # actions one run may produce (RFC 5228 section 2.10.6 allows limits)
    max_redirects: int = 4  # redirects in one run (RFC 5228 section 4.2: limit redirects)
    max_variables: int = 128  # RFC 5229 section 6: bound the number of variables
    max_body_scan: int = 1024 * 1024  # octets of decoded body text the body test searches
