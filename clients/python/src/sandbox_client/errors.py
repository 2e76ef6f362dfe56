"""Typed errors of the clients.

Every error names the claim (when one was created) and carries the reason
and message the cluster gave: the claim's ``Ready`` condition, or the API
server's answer to the create. A wait never ends in a bare timeout: a
:class:`ClaimTimeout` says what the claim was doing when time ran out.

Hierarchy::

    SandboxError
    +-- ClaimRejected        the API server refused the create (4xx but 408/429): admission, RBAC, schema
    +-- ClaimFailed          the operator reported a reason that ends the wait
    |   +-- TemplateNotFound
    |   +-- ClaimDeleted     someone deleted the claim while we waited (or another claim took its name)
    +-- ClaimTimeout         not Ready in time; .cold, .condition tell why
    +-- ApiError             any other API failure (408, 429 and 5xx once retries ran out of time,
    |                        no answer, connection, watch error, a configuration that cannot be loaded)
    +-- BatchError           create_many: some claims failed (.errors, .claims, .not_started)

An :class:`ApiError` of a create whose outcome is unknown names the claim
(``claim``): the client chose the name and has tried to delete it.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

from .status import Condition


class SandboxError(Exception):
    """Base class: ``claim`` and ``namespace`` say which claim, ``reason`` and
    ``message`` what the cluster said."""

    def __init__(
        self,
        text: str,
        *,
        claim: Optional[str] = None,
        namespace: Optional[str] = None,
        reason: Optional[str] = None,
        message: Optional[str] = None,
    ) -> None:
        super().__init__(text)
        self.claim = claim
        self.namespace = namespace
        self.reason = reason
        self.message = message


class ClaimRejected(SandboxError):
    """The API server refused to create the claim (``status`` is the HTTP
    code, ``message`` its explanation, e.g. the webhook's denial naming the
    field)."""

    def __init__(self, namespace: str, status: int, reason: str, message: str) -> None:
        super().__init__(
            f"SandboxClaim create in namespace {namespace} rejected ({f'{status} {reason}'.strip()}): {message}",
            namespace=namespace,
            reason=reason,
            message=message,
        )
        self.status = status


class ClaimFailed(SandboxError):
    """The claim's ``Ready`` condition carries a reason that ends the wait."""

    def __init__(self, claim: str, namespace: str, condition: Condition) -> None:
        super().__init__(
            f"SandboxClaim {namespace}/{claim} failed: {condition.describe()}",
            claim=claim,
            namespace=namespace,
            reason=condition.reason,
            message=condition.message,
        )
        self.condition = condition


class TemplateNotFound(ClaimFailed):
    """The claim names a SandboxTemplate that does not exist in its namespace."""


class ClaimDeleted(ClaimFailed):
    """The claim was deleted while the client waited for it."""


class ClaimTimeout(SandboxError):
    """Not Ready within ``timeout`` seconds.

    ``condition`` is the last ``Ready`` condition seen (``None`` if the
    operator never wrote one: is it running and watching this namespace?),
    ``launch_type`` the last launch type, and ``cold`` whether the claim was
    waiting for a cold Pod start.
    """

    def __init__(
        self,
        claim: str,
        namespace: str,
        timeout: float,
        condition: Optional[Condition],
        launch_type: Optional[str],
    ) -> None:
        if condition is None:
            state = "no status yet (is the operator running for this namespace?)"
        else:
            state = f"last condition {condition.describe()}"
        while_cold = " while starting cold" if launch_type == "cold" else ""
        super().__init__(
            f"SandboxClaim {namespace}/{claim} not Ready after {timeout:g}s{while_cold}: {state}",
            claim=claim,
            namespace=namespace,
            reason=condition.reason if condition else None,
            message=condition.message if condition else None,
        )
        self.timeout = timeout
        self.condition = condition
        self.launch_type = launch_type

    @property
    def cold(self) -> bool:
        """Whether the claim timed out waiting for a cold start."""
        return self.launch_type == "cold"


class ApiError(SandboxError):
    """An API call failed for a reason other than a refused create (``status``
    is the HTTP code, ``None`` when no answer came)."""

    def __init__(self, what: str, status: Optional[int], detail: str, **kwargs: Any) -> None:
        code = f" ({status})" if status else ""
        super().__init__(f"{what} failed{code}: {detail}", message=detail, **kwargs)
        self.status = status


class BatchError(SandboxError):
    """``create_many`` could not get every sandbox. ``errors`` holds one
    error per failed claim; ``claims`` the ones that were Ready (already
    deleted again unless ``delete_on_exit=False``); ``not_started`` how many
    of the ``requested`` claims were never started (after the first failure
    a batch that raises starts no more)."""

    def __init__(
        self, errors: Sequence[SandboxError], claims: Sequence[Any], *, requested: Optional[int] = None
    ) -> None:
        first = errors[0] if errors else None
        done = len(errors) + len(claims)
        not_started = max(0, requested - done) if requested is not None else 0
        more = f" ({not_started} more not started)" if not_started else ""
        super().__init__(
            f"{len(errors)} of {done + not_started} claims failed{more}; first: {first}",
            reason=first.reason if first else None,
            message=str(first) if first else None,
        )
        self.errors: List[SandboxError] = list(errors)
        self.claims: List[Any] = list(claims)
        self.not_started = not_started


def failed(claim: str, namespace: str, condition: Condition) -> ClaimFailed:
    """The most specific :class:`ClaimFailed` for a terminal condition."""
    if condition.reason == "TemplateNotFound":
        return TemplateNotFound(claim, namespace, condition)
    return ClaimFailed(claim, namespace, condition)
