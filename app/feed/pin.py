"""The scroll token: what a pinned scroll keeps fixed, so that its pages never repeat or skip a post.

A page's feed depends on three things that change while a user scrolls: the model version (a training run
publishes a new one), the live generation (a refresh publishes new fresh posts and new users) and the
user's exclusions (events arrive). The token pins all three: ``<model_version>.<generation>.<cutoff>``,
where ``cutoff`` is the Redis time (microseconds) of the scroll's first page; exclusions that arrived
after it are left out of the scroll's later pages, which is why ``seen``/``shown`` are scored by arrival.

``version=<model_version>``, the pin of earlier clients, is a token with the model version alone: the
generation and cutoff are then the current ones on each page, as the live parts were not pinned before.
Clients treat the token as opaque.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ml.artifact import VERSION_PATTERN

TOKEN_PATTERN = re.compile(rf"^({VERSION_PATTERN.pattern.strip('^$')})\.(\d{{1,15}})\.(\d{{1,19}})$")


@dataclass(frozen=True)
class Pin:
    """What a page is pinned to; None fields take their current value."""

    version: str | None = None
    generation: int | None = None
    cutoff: int | None = None  # Redis time, microseconds

    @classmethod
    def parse(cls, token: str) -> Pin:
        """The pin of a token; raises ValueError if it is not one."""
        match = TOKEN_PATTERN.fullmatch(token)
        if match is None:
            raise ValueError(f"not a feed token: {token!r}")
        return cls(match[1], int(match[2]), int(match[3]))

    @property
    def token(self) -> str:
        """The token of a fully resolved pin."""
        if self.version is None or self.generation is None or self.cutoff is None:
            raise ValueError("only a fully resolved pin has a token")
        return f"{self.version}.{self.generation}.{self.cutoff}"


UNPINNED = Pin()
