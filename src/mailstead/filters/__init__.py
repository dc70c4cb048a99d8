"""Inbound message filters: an ordered pipeline of stages (sender authentication first, then
spam, malware and Sieve) run on port-25 mail before it is stored."""

from mailstead.filters.pipeline import (
    Action,
    FilterContext,
    Pipeline,
    PipelineResult,
    Stage,
    Verdict,
    parse_fields,
)

__all__ = [
    "Action",
    "FilterContext",
    "Pipeline",
    "PipelineResult",
    "Stage",
    "Verdict",
    "parse_fields",
]
