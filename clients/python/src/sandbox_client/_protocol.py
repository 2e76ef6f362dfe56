"""What both clients say to the API server and how they read its answers.

Owns everything of a claim's create / get / delete / watch that does not
depend on blocking or asyncio I/O: where the kubeconfig is, the arguments of
the one-claim watch, what a watch event means, and which typed error an API
error becomes. The sync and async clients only make the calls; given the
same answers, both raise the same errors and return the same facts.

Pure: no I/O. The API errors of ``kubernetes`` and ``kubernetes_asyncio``
are read through the fields they share (``status``, ``reason``, ``body``).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Mapping, Optional, Protocol, Tuple, Union

from . import errors
from ._decide import DELETED, check
from .status import GROUP, PLURAL, VERSION, SandboxInfo, Waiting


class ApiErrorLike(Protocol):
    """The fields of an ``ApiException`` of either Kubernetes package."""

    @property
    def status(self) -> Optional[int]: ...

    @property
    def reason(self) -> Optional[str]: ...

    @property
    def body(self) -> Union[str, bytes, None]: ...


def kubeconfig_path(kubeconfig: Optional[str]) -> Optional[str]:
    """``kubeconfig``, else ``$KUBECONFIG`` (read now, not at import), else
    ``~/.kube/config`` when it exists; ``None`` means in-cluster."""
    home = os.path.expanduser("~/.kube/config")
    return kubeconfig or os.environ.get("KUBECONFIG") or (home if os.path.exists(home) else None)


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
    (:class:`~sandbox_client.ClaimRejected`), anything else the API's."""
    reason, message = status_of(error)
    if error.status is not None and 400 <= error.status < 500:
        return errors.ClaimRejected(namespace, error.status, reason, message)
    return errors.ApiError("creating a SandboxClaim", error.status, message, namespace=namespace)


def create_unreachable(cause: BaseException, namespace: str) -> errors.ApiError:
    """The error a create raises when no answer came (connection, TLS)."""
    return errors.ApiError("creating a SandboxClaim", None, str(cause), namespace=namespace)


def read_failed(error: ApiErrorLike, namespace: str, name: str) -> errors.SandboxError:
    """The error a failed GET raises: the claim is gone (404) or the API failed."""
    if error.status == 404:
        return errors.ClaimDeleted(name, namespace, DELETED)
    return errors.ApiError(f"reading SandboxClaim {namespace}/{name}", error.status, status_of(error)[1])


def read_unreachable(cause: BaseException, namespace: str, name: str) -> errors.ApiError:
    """The error a GET raises when no answer came (connection, TLS)."""
    return errors.ApiError(f"reading SandboxClaim {namespace}/{name}", None, str(cause))


def delete_failed(error: ApiErrorLike, namespace: str, name: str) -> Optional[errors.ApiError]:
    """``None`` when a DELETE's 404 means the claim was already gone, else
    the error to raise."""
    if error.status == 404:
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
    add_note = getattr(failure, "add_note", None)
    if add_note is not None:
        add_note(f"cleanup failed, the claim is left behind: {cleanup}")


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
    namespace: str, name: str, event: Mapping[str, Any], started: float
) -> Tuple[str, Union[SandboxInfo, Waiting]]:
    """The resourceVersion a watch event carries and what it means: the facts
    of a Ready claim or the state of a waiting one; raises the typed error of
    a deleted or failed claim."""
    if event["type"] == "DELETED":
        raise errors.ClaimDeleted(name, namespace, DELETED)
    return read(namespace, name, event["raw_object"], started)


def read(namespace: str, name: str, obj: Mapping[str, Any], started: float) -> Tuple[str, Union[SandboxInfo, Waiting]]:
    """Like :func:`observe` for a claim read with GET."""
    return str(obj["metadata"]["resourceVersion"]), check(namespace, name, obj, started)


def timed_out(namespace: str, name: str, timeout: float, last: Optional[Waiting]) -> errors.ClaimTimeout:
    """The timeout error, with the last state seen."""
    return errors.ClaimTimeout(
        name, namespace, timeout, last.condition if last else None, last.launch_type if last else None
    )


def created_ref(created: Mapping[str, Any]) -> Tuple[str, str]:
    """Name and resourceVersion of the claim a create returned."""
    return str(created["metadata"]["name"]), str(created["metadata"]["resourceVersion"])
