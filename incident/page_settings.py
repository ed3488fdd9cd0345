"""The settings of the public status page — `incident.yaml` key `status_page` (validated with
the rest in incident/settings.py)."""

from __future__ import annotations

import re
import shlex
from datetime import timedelta

from pydantic import Field, field_validator

from incident.models import Duration, Strict


class StatusPageSettings(Strict):
    """Where the public status page is built, how it is published, and what it says of itself.

    With `dir` set, the site is rebuilt after every recorded public notice (start, update, ETA,
    resolve, close), then `publish` is run with the directory as its last argument."""

    dir: str | None = None  # relative to incident.yaml
    # A command (split like a shell would, but run without one): `{dir}` in it is the site's
    # directory, else the directory is appended, e.g. "rsync -a --delete {dir}/ host:/srv/status/"
    # or "aws s3 sync {dir} s3://bucket --delete". Its failure is a warning only.
    publish: str | None = None
    publish_timeout: Duration = timedelta(minutes=2)
    url: str = ""  # the public address of the site (links in the feeds, page.url of the API)
    page_id: str = Field(default="incident", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    days: int = Field(default=90, ge=1, le=3650)  # past incidents listed on the index

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^/@\s]+(/\S*)?$", value):
            raise ValueError("must be an http(s) URL, e.g. https://status.example.com")
        return value.rstrip("/")

    @field_validator("publish")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split into words: {exc}") from None
        if not words:
            raise ValueError("must not be empty")
        return value

    def publish_command(self, directory: str) -> list[str]:
        """The publish command's words for the site in `directory` (empty: none configured)."""
        words = shlex.split(self.publish) if self.publish else []
        if not words or any("{dir}" in word for word in words):
            return [word.replace("{dir}", directory) for word in words]
        return [*words, directory]
