"""HTML rendering for every web page: one Jinja2 environment with autoescaping always on, so
a value from the request or the store can never become markup by accident."""

from __future__ import annotations

from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined


class Pages:
    """The templates of ``mailstead/web/templates``; a missing variable is an error (never an
    empty string), and ``hostname`` is available to every page for the header."""

    def __init__(self, hostname: str) -> None:
        self._env = Environment(
            loader=PackageLoader("mailstead.web", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._hostname = hostname

    def render(self, name: str, **context: Any) -> str:
        return self._env.get_template(name).render(hostname=self._hostname, **context)


def stylesheet() -> bytes:
    """The one stylesheet, served at /static/mailstead.css (the CSP forbids inline styles)."""
    return resources.files("mailstead.web").joinpath("static/mailstead.css").read_bytes()
