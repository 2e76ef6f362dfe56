"""One decision both clients make after every observed state of a claim.

Owns the mapping from :func:`~sandbox_client.status.evaluate` to the
client's action: return the facts (Ready), keep waiting, or raise the typed
error of a failed claim. Pure: no I/O.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Union

from . import errors
from .status import Condition, Failed, Ready, SandboxInfo, Waiting, evaluate

#: The condition reported when the claim disappears while a client waits.
DELETED = Condition("False", "Deleted", "the claim was deleted while the client waited for it")


def check(namespace: str, name: str, obj: Mapping[str, Any], started: float) -> Union[SandboxInfo, Waiting]:
    """The facts of a Ready claim or the state of a waiting one; raises the
    typed error of a failed one. ``started`` is the ``time.monotonic()``
    reading taken before the create."""
    outcome = evaluate(obj, client_seconds=time.monotonic() - started)
    if isinstance(outcome, Ready):
        return outcome.info
    if isinstance(outcome, Failed):
        raise errors.failed(name, namespace, outcome.condition)
    return outcome
