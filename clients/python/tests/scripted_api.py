"""A scripted stand-in for the custom-objects API, for the failure paths a
real API server cannot be made to produce on cue (a connection that drops
between the create and the delete).

:class:`ScriptedClaims` answers the calls both clients make on claims: the
create names claims ``claim-1``, ``claim-2``, ... in order; what the watch,
GET and DELETE of each claim do is a script, keyed by claim name (a Ready
claim by default). It records every DELETE attempt, so a test can assert
what was cleaned up. The watch answers through the real ``Watch`` of
either package: only the HTTP response under it is scripted.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any

#: Status of a Ready warm claim, as the operator writes it.
READY_STATUS: dict[str, Any] = {
    "conditions": [{"type": "Ready", "status": "True", "reason": "SandboxReady", "message": ""}],
    "sandbox": {"name": "x", "podIPs": ["10.0.0.7"]},
    "podName": "pool-abc12",
    "launchType": "warm",
    "warmPool": "pool",
}


def ready_claim(name: str, namespace: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": "2"}, "status": READY_STATUS}


class WatchResponse:
    """The streamed HTTP response of one watch: one ``MODIFIED`` event per object."""

    status = 200

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.lines = [json.dumps({"type": "MODIFIED", "object": o}).encode() + b"\n" for o in objects]
        self.content = self  # kubernetes_asyncio reads resp.content.readline()

    def stream(self, amt: Any = None, decode_content: Any = None) -> Iterator[bytes]:  # kubernetes
        yield from self.lines

    async def readline(self) -> bytes:  # kubernetes_asyncio
        return self.lines.pop(0) if self.lines else b""

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass

    def release(self) -> None:
        pass


class ScriptedClaims:
    """The ``CustomObjectsApi`` calls on claims, answered from ``watch``,
    ``get`` and ``delete``: claim name -> the exception that call raises
    (a claim not named is Ready and deleted without error).

    ``asynchronous`` makes every call a coroutine, as in
    ``kubernetes_asyncio``.
    """

    def __init__(
        self,
        *,
        watch: Mapping[str, BaseException] | None = None,
        get: Mapping[str, BaseException] | None = None,
        delete: Mapping[str, BaseException] | None = None,
        asynchronous: bool = False,
    ) -> None:
        self.watch, self.get, self.delete = dict(watch or {}), dict(get or {}), dict(delete or {})
        self.asynchronous = asynchronous
        self.created: list[str] = []
        #: Every DELETE attempt, failed or not, in order.
        self.deleted: list[str] = []
        self._lock = threading.Lock()

    def _answer(self, value: Any) -> Any:
        if not self.asynchronous:
            return value

        async def answer() -> Any:
            return value

        return answer()

    def _fail(self, error: BaseException) -> Any:
        if not self.asynchronous:
            raise error

        async def fail() -> Any:
            raise error

        return fail()

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, body: Any) -> Any:
        with self._lock:
            name = f"claim-{len(self.created) + 1}"
            self.created.append(name)
        return self._answer({"metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"}})

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, **kw: Any) -> Any:
        name = kw["field_selector"].removeprefix("metadata.name=")
        if name in self.watch:
            return self._fail(self.watch[name])
        return self._answer(WatchResponse([ready_claim(name, namespace)]))

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> Any:
        if name in self.get:
            return self._fail(self.get[name])
        return self._answer(ready_claim(name, namespace))

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kw: Any
    ) -> Any:
        with self._lock:
            self.deleted.append(name)
        if name in self.delete:
            return self._fail(self.delete[name])
        return self._answer({})


def notes(error: BaseException) -> list[str]:
    """The notes (Python 3.11+) added to ``error``."""
    return list(getattr(error, "__notes__", []))
