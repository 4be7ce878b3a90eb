"""A DNS for tests: answers what the test says, and counts the questions (the dispatcher's resolver
seam, ``Dispatcher(..., resolver=...)`` / ``WebhookService(..., resolver=...)``)."""

from __future__ import annotations

import socket
from collections.abc import Sequence


class StaticResolver:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.questions: list[str] = []

    async def resolve(self, host: str, port: int) -> Sequence[str]:  # noqa: ARG002 - the port changes no answer
        self.questions.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not known to this test")
        return list(self.answers[host])
