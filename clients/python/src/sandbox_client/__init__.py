"""Claim a sandbox from sandbox-operator in one call.

::

    from sandbox_client import SandboxClaim

    with SandboxClaim.create(template="aio", namespace="agents", timeout=30) as sb:
        print(sb.pod_name, sb.pod_ip, sb.launch_type, sb.time_to_ready_seconds)

The asyncio twin is :class:`AsyncSandboxClaim` (``pip install
'sandbox-operator-client[async]'``), imported lazily so the sync client
works without ``kubernetes_asyncio``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ApiError,
    BatchError,
    ClaimDeleted,
    ClaimFailed,
    ClaimRejected,
    ClaimTimeout,
    SandboxError,
    TemplateNotFound,
)
from .status import TERMINAL_REASONS, Condition, SandboxInfo
from .sync_client import ClaimBatch, SandboxClaim, create_many

if TYPE_CHECKING:  # the real names for type checkers; loaded lazily at run time
    from .async_client import AsyncClaimBatch, AsyncSandboxClaim
    from .async_client import create_many as create_many_async

__all__ = [
    "ApiError",
    "AsyncClaimBatch",
    "AsyncSandboxClaim",
    "BatchError",
    "ClaimBatch",
    "ClaimDeleted",
    "ClaimFailed",
    "ClaimRejected",
    "ClaimTimeout",
    "Condition",
    "SandboxClaim",
    "SandboxError",
    "SandboxInfo",
    "TERMINAL_REASONS",
    "TemplateNotFound",
    "create_many",
    "create_many_async",
]


def __getattr__(name: str) -> Any:
    # The asyncio client loads kubernetes_asyncio only when asked for.
    if name in {"AsyncSandboxClaim", "AsyncClaimBatch", "create_many_async"}:
        from . import async_client

        return {
            "AsyncSandboxClaim": async_client.AsyncSandboxClaim,
            "AsyncClaimBatch": async_client.AsyncClaimBatch,
            "create_many_async": async_client.create_many,
        }[name]
    raise AttributeError(f"module 'sandbox_client' has no attribute {name!r}")
