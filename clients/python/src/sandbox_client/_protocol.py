"""What both clients say to the API server and how they read its answers.

Owns everything of a claim's create / get / delete / watch that does not
depend on blocking or asyncio I/O: where the kubeconfig is, the arguments of
the one-claim watch, what a watch event means, and which typed error an API
error becomes. The sync and async clients only make the calls; given the
same answers, both raise the same errors and return the same facts.

It also owns the create's plan (:class:`CreatePlan`): the client picks the
claim's name itself (the ``generateName`` prefix plus five random
characters), so a create whose answer never arrived can still be found by
name, and a retry or a cleanup after an unknown outcome can recognise its
own claim by the random token in the annotation :data:`REQUEST_ID`: a
claim under the name without that token is someone else's and is never
deleted (:meth:`CreatePlan.ours`).

Pure: no I/O (the plan reads the clock and draws random names). The API
errors of ``kubernetes`` and ``kubernetes_asyncio`` are read through the
fields they share (``status``, ``reason``, ``body``, ``headers``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Protocol, Tuple, Union

from . import errors
from ._decide import DELETED, check
from .status import GROUP, PLURAL, VERSION, SandboxInfo, Waiting

#: The characters of the five the client appends to a ``generateName``
#: prefix (those the API server uses too).
SUFFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
SUFFIX_LENGTH = 5
#: Names tried when the chosen one is held by someone else (409).
NAME_TRIES = 5
#: The annotation holding the random token of the client that created the
#: claim (outside the operator's reserved ``agents.x-k8s.io/`` prefix).
REQUEST_ID = "sandbox-client/request-id"
#: Bound (seconds) of every TCP/TLS connect.
CONNECT_TIMEOUT = 10.0
#: Bound (seconds) of every DELETE: a cleanup never hangs on a dead API server.
DELETE_TIMEOUT = 10.0
#: How long (seconds) the cleanup after a create abandoned without an answer
#: (none, timeout, Ctrl-C or cancellation during the POST) looks again for
#: the claim the API server may still write, and how often (read when used).
LATE_CREATE_WAIT = 5.0
LATE_CREATE_POLL = 0.5
#: Length (seconds) of one watch of a ``create_many`` claim: between two, a
#: worker checks whether the batch was stopped (Ctrl-C).
STOP_SLICE = 1.0
#: How often a watch whose connection was reset is resumed.
WATCH_RESUMES = 5
#: First and largest delay (seconds) between two creates the API server
#: asked to retry (429, 408, 5xx) without a Retry-After.
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0


class ApiErrorLike(Protocol):
    """The fields of an ``ApiException`` of either Kubernetes package."""

    @property
    def status(self) -> Optional[int]: ...

    @property
    def reason(self) -> Optional[str]: ...

    @property
    def body(self) -> Union[str, bytes, None]: ...


class Stopped(Exception):
    """A ``create_many`` worker's claim was stopped (the batch was interrupted)."""


def new_name(prefix: str) -> str:
    """``prefix`` plus five random characters of :data:`SUFFIX_ALPHABET`."""
    return prefix + "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))


def request_timeout(deadline: float, extra: float = 0.0) -> Tuple[float, float]:
    """``_request_timeout`` of a call that must end by ``deadline`` (a
    ``time.monotonic()`` reading): connect within :data:`CONNECT_TIMEOUT`
    and the time left, read within the time left plus ``extra`` (the slack
    a watch or GET gets so the client's own deadline fires first)."""
    left = max(deadline - time.monotonic(), 0.001)
    return min(CONNECT_TIMEOUT, left), left + extra


def delete_timeout() -> Tuple[float, float]:
    """``_request_timeout`` of a DELETE (read when called: tests change it)."""
    return min(CONNECT_TIMEOUT, DELETE_TIMEOUT), DELETE_TIMEOUT


def retry_after(error: ApiErrorLike) -> Optional[float]:
    """The seconds of the answer's ``Retry-After`` header, if any."""
    headers = getattr(error, "headers", None)
    if not headers:
        return None
    try:
        value = headers.get("Retry-After") or headers.get("retry-after")
    except AttributeError:
        return None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def is_retried(status: Optional[int]) -> bool:
    """Whether a create answered ``status`` is tried again: 408, 429, 5xx."""
    return status is not None and (status in (408, 429) or status >= 500)


@dataclass(frozen=True)
class Retry:
    """Send the create again (same name) after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True)
class ReadBack:
    """The name is taken and an earlier try may have taken it: read the
    claim and take it over if it carries our token (:meth:`CreatePlan.adopt`)."""


@dataclass(frozen=True)
class Renamed:
    """The name is someone else's: send the create again under a new one."""


Step = Union[Retry, ReadBack, Renamed]


class CreatePlan:
    """One claim's create, from the body of :func:`~sandbox_client.status.claim_body`.

    The name is chosen here (``generateName`` plus five random characters,
    or the caller's ``name``) and sent as ``metadata.name``, so the claim
    can be found by name even when the create's answer was lost; it is
    deleted only when it carries :attr:`token` (:meth:`ours`), with its uid
    as precondition: the name may hold someone else's claim (a caller's
    ``name`` already in use, whose create failed with a 5xx or no answer
    before the API server checked the name).
    :attr:`may_exist` says whether a claim of ours may exist under
    :attr:`name`: once created, while a request is in flight, and after an
    attempt without a clear answer (none, 408, 5xx). A definite refusal (any
    other 4xx) and a 409 on a name that no attempt of ours may have written
    leave it false. Retries after an unknown outcome keep the name (a new
    one could leak a claim the earlier attempt writes later); a 409 after
    one reads the claim and takes it over only when it carries :attr:`token`.
    """

    def __init__(self, body: Mapping[str, Any], namespace: str, deadline: float) -> None:
        self._body = copy.deepcopy(dict(body))
        metadata = self._body.setdefault("metadata", {})
        self.namespace = namespace
        self.deadline = deadline
        self.token = secrets.token_hex(8)
        self.prefix: Optional[str] = metadata.pop("generateName", None)
        self.generated = not metadata.get("name")
        self.name: str = new_name(self.prefix or "claim-") if self.generated else str(metadata["name"])
        self.names_tried = 1
        self.uid: Optional[str] = None
        self.created = False
        self._in_flight = False
        self._unsure = False
        self._abandoned = False
        self._tries = 0

    @property
    def may_exist(self) -> bool:
        """Whether a claim of ours may exist under :attr:`name`."""
        return self.created or self._in_flight or self._unsure

    @property
    def abandoned(self) -> bool:
        """Whether an attempt ended without any answer (none, a timeout,
        Ctrl-C or cancellation while in flight): the API server may still
        write that claim later, after a first look found nothing."""
        return self._abandoned or self._in_flight

    def late_wait(self) -> float:
        """How long the cleanup looks again for a claim it did not find:
        :data:`LATE_CREATE_WAIT` after an attempt without a clear answer (none,
        a timeout, cancellation, or a 408 or 5xx: the API server may go on
        with a create after a 504, and a proxy's 502/504 says nothing of it),
        else 0."""
        unsure = self.abandoned or self._unsure
        return LATE_CREATE_WAIT if unsure and not self.created else 0.0

    def ours(self, obj: Mapping[str, Any]) -> Optional[str]:
        """The uid of ``obj``, a claim read under :attr:`name`, when it is
        ours (it carries :attr:`token`); ``None`` when it is someone else's."""
        metadata = obj.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        if annotations.get(REQUEST_ID) != self.token or not metadata.get("uid"):
            return None
        return str(metadata["uid"])

    def body(self) -> Dict[str, Any]:
        """The claim to send: :attr:`name`, the token in :data:`REQUEST_ID`."""
        body = copy.deepcopy(self._body)
        metadata = body["metadata"]
        metadata["name"] = self.name
        metadata["annotations"] = {**(metadata.get("annotations") or {}), REQUEST_ID: self.token}
        return body

    def sending(self) -> None:
        """A create is about to be sent (from now until it is answered, the
        claim may exist)."""
        self._in_flight = True
        self._tries += 1

    def answered(self, created: Mapping[str, Any]) -> Tuple[str, str]:
        """The create (or the read of our own claim) returned ``created``:
        its name and resourceVersion; keeps its uid."""
        self._in_flight = False
        self.created = True
        metadata = created.get("metadata") or {}
        self.uid = str(metadata["uid"]) if metadata.get("uid") else None
        return created_ref(created)

    def unanswered(self, cause: BaseException) -> errors.ApiError:
        """No answer came (connection, TLS, timeout): the claim may exist;
        the error to raise."""
        self._in_flight = False
        self._unsure = True
        self._abandoned = True
        return errors.ApiError("creating a SandboxClaim", None, str(cause) or repr(cause), **self._names())

    def no_answer_within(self, timeout: float) -> errors.ApiError:
        """The error of a create still unanswered when the deadline passed."""
        if self._in_flight:
            self._in_flight = False
            self._unsure = True
            self._abandoned = True
        return errors.ApiError("creating a SandboxClaim", None, f"no answer within {timeout:g}s", **self._names())

    def failed(self, error: ApiErrorLike) -> Union[Step, errors.SandboxError]:
        """What to do after the API server answered the create with an
        error: a :data:`Step`, or the typed error to raise."""
        self._in_flight = False
        status = error.status
        if status == 409:
            return ReadBack() if self._unsure else self._rename(error)
        if is_retried(status):
            if status != 429:
                self._unsure = True  # 408, 5xx: the write may have happened
            delay = retry_after(error)
            if delay is None:
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._tries - 1)) * random.uniform(0.5, 1.5)
            if time.monotonic() + delay >= self.deadline:
                return errors.ApiError("creating a SandboxClaim", status, status_of(error)[1], **self._names())
            return Retry(delay)
        return create_failed(error, self.namespace)

    def adopt(
        self, obj: Optional[Mapping[str, Any]], error: ApiErrorLike
    ) -> Union[Step, Tuple[str, str], errors.SandboxError]:
        """After a :class:`ReadBack`: ``obj`` is the claim under our name
        (``None``: gone again). Ours (our token): its name and
        resourceVersion; gone: send again; someone else's: a new name (or
        ``error``, the 409, as :class:`~sandbox_client.ClaimRejected` for a
        caller's name)."""
        if obj is None:
            return Retry(0.0)
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if annotations.get(REQUEST_ID) == self.token:
            return self.answered(obj)
        return self._rename(error)

    def _rename(self, error: ApiErrorLike) -> Union[Renamed, errors.SandboxError]:
        # The name is someone else's: nothing of ours can be under it.
        self._unsure = False
        if not self.generated or self.names_tried >= NAME_TRIES:
            return create_failed(error, self.namespace)
        self.name = new_name(self.prefix or "claim-")
        self.names_tried += 1
        return Renamed()

    def _names(self) -> Dict[str, Any]:
        return {"namespace": self.namespace, "claim": self.name}


def kubeconfig_path(kubeconfig: Optional[str]) -> Optional[str]:
    """``kubeconfig``, else ``$KUBECONFIG`` (read now, not at import), else
    ``~/.kube/config`` when it exists; ``None`` means in-cluster."""
    home = os.path.expanduser("~/.kube/config")
    return kubeconfig or os.environ.get("KUBECONFIG") or (home if os.path.exists(home) else None)


def config_failed(cause: BaseException, kubeconfig: Optional[str], context: Optional[str]) -> errors.ApiError:
    """The error of a configuration that cannot be loaded, naming the
    kubeconfig and context (or saying none was found, for in-cluster)."""
    if kubeconfig is None:
        what = (
            "loading the in-cluster configuration"
            " (no kubeconfig found: none passed, $KUBECONFIG unset, no ~/.kube/config)"
        )
    else:
        what = f"loading kubeconfig {kubeconfig}" + (f" with context {context}" if context else "")
    return errors.ApiError(what, None, str(cause) or repr(cause))


def status_of(error: ApiErrorLike) -> Tuple[str, str]:
    """Reason and message of the Status object an API error carries."""
    try:
        body = json.loads(error.body or "{}")
    except ValueError:
        body = {}
    reason = str(body.get("reason") or error.reason or "")
    message = str(body.get("message") or error.body or error.reason or "")
    return reason, message


def create_failed(error: ApiErrorLike, namespace: str) -> errors.SandboxError:
    """The error a refused create raises: a 4xx is the caller's
    (:class:`~sandbox_client.ClaimRejected`), except 408 and 429, which
    are the API's like anything else (:class:`~sandbox_client.ApiError`)."""
    reason, message = status_of(error)
    if error.status is not None and 400 <= error.status < 500 and not is_retried(error.status):
        return errors.ClaimRejected(namespace, error.status, reason, message)
    return errors.ApiError("creating a SandboxClaim", error.status, message, namespace=namespace)


def read_failed(error: ApiErrorLike, namespace: str, name: str) -> errors.SandboxError:
    """The error a failed GET raises: the claim is gone (404) or the API failed."""
    if error.status == 404:
        return errors.ClaimDeleted(name, namespace, DELETED)
    return errors.ApiError(f"reading SandboxClaim {namespace}/{name}", error.status, status_of(error)[1])


def read_unreachable(cause: BaseException, namespace: str, name: str) -> errors.ApiError:
    """The error a GET raises when no answer came (connection, TLS)."""
    return errors.ApiError(f"reading SandboxClaim {namespace}/{name}", None, str(cause))


def delete_failed(
    error: ApiErrorLike, namespace: str, name: str, uid: Optional[str] = None
) -> Optional[errors.ApiError]:
    """``None`` when the claim was already gone (404, or a 409 from the uid
    precondition: the name holds another claim now), else the error to raise."""
    if error.status == 404 or (error.status == 409 and uid):
        return None
    return errors.ApiError(f"deleting SandboxClaim {namespace}/{name}", error.status, status_of(error)[1])


def delete_unreachable(cause: BaseException, namespace: str, name: str) -> errors.ApiError:
    """The error a DELETE raises when no answer came (connection, TLS)."""
    return errors.ApiError(f"deleting SandboxClaim {namespace}/{name}", None, str(cause))


def note_left_behind(failure: BaseException, cleanup: errors.SandboxError) -> None:
    """Records on ``failure``, the error being raised, that the delete
    cleaning up after it failed too (``cleanup``): the claim it names is left
    behind. A note (Python 3.11+; nothing on 3.10) keeps ``failure`` the
    error callers catch, so a cleanup never hides why the call failed."""
    note(failure, f"cleanup failed, the claim is left behind: {cleanup}")


def not_ours(namespace: str, name: str, obj: Mapping[str, Any]) -> str:
    """The note of a cleanup that found someone else's claim under the name
    (another request-id, or none) and left it alone."""
    token = ((obj.get("metadata") or {}).get("annotations") or {}).get(REQUEST_ID)
    whose = f"request-id {token}" if token else f"no {REQUEST_ID} annotation"
    return f"cleanup: SandboxClaim {namespace}/{name} is not this create's ({whose}), left alone"


def note(failure: BaseException, text: str) -> None:
    """Adds ``text`` as a note on ``failure`` (Python 3.11+; nothing on 3.10)."""
    add_note = getattr(failure, "add_note", None)
    if add_note is not None:
        add_note(text)


def watch_failed(error: ApiErrorLike, namespace: str, name: str) -> Optional[errors.ApiError]:
    """``None`` for a ``410 Gone`` (the resourceVersion fell out of the watch
    window: read the claim once and watch on), else the error to raise."""
    if error.status == 410:
        return None
    return errors.ApiError(f"watching SandboxClaim {namespace}/{name}", error.status, status_of(error)[1])


def watch_unreachable(cause: BaseException, namespace: str, name: str) -> errors.ApiError:
    """The error a watch raises when its connection fails."""
    return errors.ApiError(f"watching SandboxClaim {namespace}/{name}", None, str(cause))


def list_args(namespace: str) -> Tuple[str, str, str, str]:
    """Positional arguments of the custom-object calls on claims."""
    return GROUP, VERSION, namespace, PLURAL


def watch_kwargs(name: str, version: str, remaining: float) -> Dict[str, Any]:
    """Keyword arguments of the watch on the one claim ``name`` from
    ``version``; the server ends it after the whole seconds left."""
    return {
        "field_selector": f"metadata.name={name}",
        "resource_version": version,
        "timeout_seconds": max(1, math.ceil(remaining)),
    }


def observe(
    namespace: str, name: str, event: Mapping[str, Any], started: float, uid: Optional[str] = None
) -> Tuple[str, Union[SandboxInfo, Waiting]]:
    """The resourceVersion a watch event carries and what it means: the facts
    of a Ready claim or the state of a waiting one; raises the typed error of
    a deleted or failed claim (a claim with another ``uid`` than ours is
    another claim under the same name: ours was deleted)."""
    if event["type"] == "DELETED":
        raise errors.ClaimDeleted(name, namespace, DELETED)
    return read(namespace, name, event["raw_object"], started, uid)


def read(
    namespace: str, name: str, obj: Mapping[str, Any], started: float, uid: Optional[str] = None
) -> Tuple[str, Union[SandboxInfo, Waiting]]:
    """Like :func:`observe` for a claim read with GET."""
    found = (obj.get("metadata") or {}).get("uid")
    if uid and found and found != uid:
        raise errors.ClaimDeleted(name, namespace, DELETED)
    return str(obj["metadata"]["resourceVersion"]), check(namespace, name, obj, started)


def timed_out(namespace: str, name: str, timeout: float, last: Optional[Waiting]) -> errors.ClaimTimeout:
    """The timeout error, with the last state seen."""
    return errors.ClaimTimeout(
        name, namespace, timeout, last.condition if last else None, last.launch_type if last else None
    )


def created_ref(created: Mapping[str, Any]) -> Tuple[str, str]:
    """Name and resourceVersion of the claim a create returned."""
    return str(created["metadata"]["name"]), str(created["metadata"]["resourceVersion"])
