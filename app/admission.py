"""Admission control: how many requests a worker works on before it answers 503."""

from __future__ import annotations

from typing import final


@final
class Admission:
    """A counter with a limit; ``admit`` and ``leave`` bracket each compression request."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending = 0
        self.rejected = 0

    def admit(self) -> bool:
        if self.pending >= self.limit:
            self.rejected += 1
            return False
        self.pending += 1
        return True

    def leave(self) -> None:
        self.pending -= 1
