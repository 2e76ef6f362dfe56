"""The asyncio twin against the real control plane and operator."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import claim_exists, list_claims, wait_until
from kubernetes import client as k8s

from sandbox_client import AsyncSandboxClaim, ClaimTimeout, TemplateNotFound, create_many_async


def test_async_warm_claim_with_async_with(namespace: str, custom: k8s.CustomObjectsApi) -> None:
    async def claim() -> tuple[str, str | None, str | None, float | None]:
        async with AsyncSandboxClaim.create(template="aio", namespace=namespace, timeout=30) as sb:
            return sb.name, sb.pod_name, sb.launch_type, sb.time_to_ready_seconds

    name, pod, launch, seconds = asyncio.run(claim())
    assert launch == "warm"
    assert pod and pod != name and pod.startswith("aio-pool-")
    assert seconds is not None and seconds > 0
    wait_until(f"claim {name} deleted", lambda: not claim_exists(custom, namespace, name), 10)


def test_async_create_can_be_awaited_and_deleted_by_hand(namespace: str, custom: k8s.CustomObjectsApi) -> None:
    async def claim() -> str:
        sb = await AsyncSandboxClaim.create(template="aio", namespace=namespace, timeout=30)
        assert sb.pod_ips
        assert claim_exists(custom, namespace, sb.name)
        await sb.delete()
        return sb.name

    name = asyncio.run(claim())
    wait_until(f"claim {name} deleted", lambda: not claim_exists(custom, namespace, name), 10)


def test_async_missing_template_and_exact_timeout(namespace: str) -> None:
    async def missing() -> None:
        async with AsyncSandboxClaim.create(template="no-such-template", namespace=namespace, timeout=30):
            raise AssertionError("unreachable: the claim cannot become Ready")

    with pytest.raises(TemplateNotFound) as raised:
        asyncio.run(missing())
    assert raised.value.reason == "TemplateNotFound"

    async def slow() -> None:
        await AsyncSandboxClaim.create(template="slow", namespace=namespace, warm_pool="none", timeout=1.5)

    started = time.monotonic()
    with pytest.raises(ClaimTimeout) as timed_out:
        asyncio.run(slow())
    # asyncio.wait_for bounds the wait exactly (plus the delete of the claim).
    assert 1.5 <= time.monotonic() - started < 3.0
    assert timed_out.value.cold and timed_out.value.reason in {"SandboxCreated", "SandboxNotReady"}


def test_async_create_many_bounded(namespace: str, custom: k8s.CustomObjectsApi) -> None:
    async def batch() -> list[str | None]:
        async with await create_many_async(
            "aio", 4, namespace=namespace, concurrency=2, timeout=30, labels={"batch": "async"}
        ) as claims:
            assert len(list_claims(custom, namespace, "batch=async")) == 4
            return [sb.pod_name for sb in claims]

    pods = asyncio.run(batch())
    assert len(pods) == 4 and len(set(pods)) == 4 and all(pods)
    wait_until("the async batch deleted", lambda: not list_claims(custom, namespace, "batch=async"), 10)
