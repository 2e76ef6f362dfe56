"""A scripted stand-in for the custom-objects API, for the failure paths a
real API server cannot be made to produce on cue (a connection that drops
between the create and the delete, a create whose answer is lost, a 429).

:class:`ScriptedClaims` answers the calls both clients make on claims. The
client names its claims itself: route ``sandbox_client._protocol.new_name``
to :meth:`ScriptedClaims.new_name` and they are ``claim-1``, ``claim-2``, ...
in order. The claims created are stored (with their annotations and a uid
``uid-<name>``): a create of a stored or taken name is a 409. What each
create does is a script (``create``, one step per call, played before the
name is checked, as the API server calls the admission webhooks first: an
exception to raise, :class:`Written` to store the claim and then raise, or
:class:`Late` to raise and store the claim a few calls later); what the
watch, GET and DELETE of each claim do is a script keyed by claim name (a
Ready claim by default). Every call is recorded with its keyword arguments
(``calls``), every create's name (``created``) and every DELETE attempt
(``deleted``). The watch answers through the real ``Watch`` of either
package: only the HTTP response under it is scripted.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from typing import Any, Union

from kubernetes.client.exceptions import ApiException
from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

#: Status of a Ready warm claim, as the operator writes it.
READY_STATUS: dict[str, Any] = {
    "conditions": [{"type": "Ready", "status": "True", "reason": "SandboxReady", "message": ""}],
    "sandbox": {"name": "x", "podIPs": ["10.0.0.7"]},
    "podName": "pool-abc12",
    "launchType": "warm",
    "warmPool": "pool",
}

#: A failure script: one exception for every call, or a list of them, one
#: per call (the calls after the last answer normally).
Failures = Union[BaseException, list[BaseException]]


class Written:
    """A create step: the claim is stored, then ``error`` is raised (the
    answer was lost, or the caller interrupted after the write)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Late:
    """A create step: ``error`` is raised, and the claim is stored only
    after ``after`` more GET or DELETE calls on its name (an abandoned create
    the API server writes late, after the client's first look)."""

    def __init__(self, error: BaseException, after: int = 1) -> None:
        self.error = error
        self.after = after


def api_exception(status: int, reason: str = "", *, asynchronous: bool = False, **headers: str) -> Exception:
    """An ``ApiException`` of either package with a Status body; ``headers``
    are the answer's (``Retry_After="1"`` is ``Retry-After: 1``)."""
    error: Exception = (AsyncApiException if asynchronous else ApiException)(status=status, reason=reason)
    error.headers = {k.replace("_", "-"): v for k, v in headers.items()}  # type: ignore[attr-defined]
    body = {"kind": "Status", "status": "Failure", "reason": reason, "message": f"{status} {reason}", "code": status}
    error.body = json.dumps(body)  # type: ignore[attr-defined]
    return error


class WatchResponse:
    """The streamed HTTP response of one watch: one ``MODIFIED`` event per
    object, then, when ``hold`` is set, silence for ``hold`` seconds (the
    watch's ``timeoutSeconds``) before the stream ends."""

    status = 200

    def __init__(self, objects: list[dict[str, Any]], hold: float = 0.0) -> None:
        self.lines = [json.dumps({"type": "MODIFIED", "object": o}).encode() + b"\n" for o in objects]
        self.hold = hold
        self.content = self  # kubernetes_asyncio reads resp.content.readline()

    def stream(self, amt: Any = None, decode_content: Any = None) -> Iterator[bytes]:  # kubernetes
        yield from self.lines
        if self.hold:
            time.sleep(self.hold)

    async def readline(self) -> bytes:  # kubernetes_asyncio
        if self.lines:
            return self.lines.pop(0)
        if self.hold:
            hold, self.hold = self.hold, 0.0
            await asyncio.sleep(hold)
        return b""

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass

    def release(self) -> None:
        pass


class ScriptedClaims:
    """The ``CustomObjectsApi`` calls on claims.

    ``create``: one step per create call, whatever the name (an exception
    raised without a write, :class:`Written` or :class:`Late`; neither
    writes over a stored or taken name); later creates succeed. ``taken``:
    names held by someone else's claim (another request-id). ``watch``, ``get``, ``delete``: claim name
    -> the failure of that call (see :data:`Failures`); a claim not named
    is Ready and deleted without error. ``waiting``: claims whose watch
    never shows them Ready (each watch holds for its ``timeoutSeconds``).
    ``uids``: claim name -> the uid GET and watch report (another claim
    under the name); a DELETE whose uid precondition fails is a 409.

    ``asynchronous`` makes every call a coroutine, as in
    ``kubernetes_asyncio``.
    """

    def __init__(
        self,
        *,
        create: list[BaseException | Written | Late] | None = None,
        taken: Collection[str] = (),
        watch: Mapping[str, Failures] | None = None,
        get: Mapping[str, Failures] | None = None,
        delete: Mapping[str, Failures] | None = None,
        waiting: Collection[str] = (),
        uids: Mapping[str, str] | None = None,
        asynchronous: bool = False,
    ) -> None:
        self.create = list(create or [])
        self.taken = set(taken)
        self.watch, self.get, self.delete = dict(watch or {}), dict(get or {}), dict(delete or {})
        self.waiting = set(waiting)
        self.uids = dict(uids or {})
        self.asynchronous = asynchronous
        #: The name of every create call, in order (a retry repeats it).
        self.created: list[str] = []
        #: Every DELETE attempt, failed or not, in order.
        self.deleted: list[str] = []
        #: Every call: (method, claim name, keyword arguments).
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        #: The claims that exist: name -> metadata.
        self.stored: dict[str, dict[str, Any]] = {}
        #: Claims of :class:`Late` creates: name -> [calls to wait, metadata].
        self.late: dict[str, list[Any]] = {}
        self._names = 0
        self._lock = threading.Lock()

    def new_name(self, prefix: str) -> str:
        """Stands in for ``_protocol.new_name``: ``claim-1``, ``claim-2``, ..."""
        with self._lock:
            self._names += 1
            return f"claim-{self._names}"

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

    def _error(self, status: int, reason: str) -> Exception:
        return api_exception(status, reason, asynchronous=self.asynchronous)

    def _scripted(self, script: dict[str, Failures], name: str) -> BaseException | None:
        """The failure scripted for this call on ``name``, if any."""
        with self._lock:
            failures = script.get(name)
            if isinstance(failures, list):
                return failures.pop(0) if failures else None
            return failures

    def _record(self, method: str, name: str, kw: dict[str, Any]) -> None:
        with self._lock:
            self.calls.append((method, name, dict(kw)))

    def _land_late(self, name: str) -> None:
        """After a GET or DELETE on ``name``: a late claim lands when due."""
        with self._lock:
            pending = self.late.get(name)
            if pending is None:
                return
            pending[0] -= 1
            if pending[0] <= 0:
                del self.late[name]
                if name not in self.stored and name not in self.taken:
                    self.stored[name] = pending[1]

    def _object(self, name: str, namespace: str, status: dict[str, Any] | None) -> dict[str, Any] | None:
        """The claim as GET and watch show it, ``None`` when there is none."""
        with self._lock:
            stored = self.stored.get(name)
            if stored is None and name in self.taken:
                stored = {"uid": f"uid-{name}-someone", "annotations": {"sandbox-client/request-id": "someone"}}
            if stored is None:
                return None
            metadata = {**stored, "name": name, "namespace": namespace, "resourceVersion": "2"}
            metadata["uid"] = self.uids.get(name, metadata["uid"])
        obj: dict[str, Any] = {"metadata": metadata}
        if status is not None:
            obj["status"] = status
        return obj

    def _status(self, name: str) -> dict[str, Any] | None:
        return None if name in self.waiting else READY_STATUS

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any, **kw: Any
    ) -> Any:
        name = body["metadata"]["name"]
        self._record("create", name, kw)
        with self._lock:
            self.created.append(name)
            step = self.create.pop(0) if self.create else None
            exists = name in self.stored or name in self.taken
            metadata = {"uid": f"uid-{name}", "annotations": dict(body["metadata"].get("annotations") or {})}
            if isinstance(step, Late) and not exists:
                self.late[name] = [step.after, metadata]
            if (step is None or isinstance(step, Written)) and not exists:
                self.stored[name] = metadata
        if isinstance(step, (Written, Late)):
            return self._fail(step.error)
        if step is not None:
            return self._fail(step)
        if exists:
            return self._fail(self._error(409, "AlreadyExists"))
        created = self._object(name, namespace, None)
        assert created is not None
        created["metadata"]["uid"] = f"uid-{name}"
        created["metadata"]["resourceVersion"] = "1"
        return self._answer(created)

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, **kw: Any) -> Any:
        name = kw["field_selector"].removeprefix("metadata.name=")
        self._record("watch", name, kw)
        failure = self._scripted(self.watch, name)
        if failure is not None:
            return self._fail(failure)
        obj = self._object(name, namespace, self._status(name))
        hold = float(kw.get("timeout_seconds") or 0) if name in self.waiting else 0.0
        return self._answer(WatchResponse([obj] if obj else [], hold))

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kw: Any
    ) -> Any:
        self._record("get", name, kw)
        failure = self._scripted(self.get, name)
        if failure is not None:
            return self._fail(failure)
        obj = self._object(name, namespace, self._status(name))
        self._land_late(name)
        if obj is None:
            return self._fail(self._error(404, "NotFound"))
        return self._answer(obj)

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kw: Any
    ) -> Any:
        self._record("delete", name, kw)
        with self._lock:
            self.deleted.append(name)
        failure = self._scripted(self.delete, name)
        if failure is not None:
            return self._fail(failure)
        obj = self._object(name, namespace, None)
        self._land_late(name)
        if obj is None:
            return self._fail(self._error(404, "NotFound"))
        options = kw.get("body")
        wanted = getattr(getattr(options, "preconditions", None), "uid", None)
        if wanted and wanted != obj["metadata"]["uid"]:
            return self._fail(self._error(409, "Conflict"))
        with self._lock:
            self.stored.pop(name, None)
        return self._answer({})


def notes(error: BaseException) -> list[str]:
    """The notes (Python 3.11+) added to ``error``."""
    return list(getattr(error, "__notes__", []))
