"""Both clients when the connection fails around the cleanup (no cluster
needed: the API is scripted, see ``scripted_api``).

What a user sees: every failure is a typed error, the error raised is the
one that ended the wait (its cause the connection error behind it), a claim
that could not be deleted is named on it, and ``create_many`` deletes the
claims already Ready whatever happens to the others.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import aiohttp
import pytest
import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes_asyncio import client as k8s_async
from scripted_api import ScriptedClaims, notes

from sandbox_client import ApiError, AsyncSandboxClaim, BatchError, SandboxClaim, create_many, create_many_async
from sandbox_client import _protocol as protocol


@pytest.fixture
def api_client() -> Iterator[k8s.ApiClient]:
    """A client that is never used for I/O: every call goes to the script."""
    client = k8s.ApiClient()
    yield client
    client.close()


def script(monkeypatch: pytest.MonkeyPatch, claims: ScriptedClaims) -> ScriptedClaims:
    """Routes both clients' custom-object calls to ``claims``, and the names
    they choose to ``claim-1``, ``claim-2``, ..."""
    monkeypatch.setattr(k8s, "CustomObjectsApi", lambda _client: claims)
    monkeypatch.setattr(k8s_async, "CustomObjectsApi", lambda _client: claims)
    monkeypatch.setattr(protocol, "new_name", claims.new_name)
    return claims


def assert_left_behind_is_noted(error: BaseException, claim: str) -> None:
    if sys.version_info >= (3, 11):
        assert any(f"SandboxClaim ns/{claim}" in n and "left behind" in n for n in notes(error)), notes(error)


def test_connection_lost_on_the_cleanup_delete_raises_the_wait_error(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient
) -> None:
    dropped = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    claims = script(
        monkeypatch,
        ScriptedClaims(watch={"claim-1": dropped}, delete={"claim-1": ConnectionRefusedError(111, "refused")}),
    )
    with pytest.raises(ApiError) as raised:
        SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client)
    assert str(raised.value).startswith("watching SandboxClaim ns/claim-1 failed")
    assert raised.value.__cause__ is dropped
    assert claims.deleted == ["claim-1"]
    assert_left_behind_is_noted(raised.value, "claim-1")


def test_connection_lost_on_the_read_after_410_is_typed_and_the_claim_deleted(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient
) -> None:
    reset = ConnectionResetError(104, "reset")
    claims = script(monkeypatch, ScriptedClaims(watch={"claim-1": ApiException(status=410)}, get={"claim-1": reset}))
    with pytest.raises(ApiError) as raised:
        SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client)
    assert str(raised.value).startswith("reading SandboxClaim ns/claim-1 failed")
    assert raised.value.__cause__ is reset
    assert claims.deleted == ["claim-1"]


def test_delete_that_cannot_connect_is_typed(monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient) -> None:
    refused = ConnectionRefusedError(111, "refused")
    script(monkeypatch, ScriptedClaims(delete={"claim-1": refused}))
    sb = SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client)
    with pytest.raises(ApiError) as raised:
        sb.delete()
    assert str(raised.value).startswith("deleting SandboxClaim ns/claim-1 failed")
    assert raised.value.__cause__ is refused


def test_create_many_deletes_the_ready_claims_when_a_later_one_loses_its_connection(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient
) -> None:
    # claim-1 and claim-2 get Ready; claim-3's watch and then its delete lose the connection.
    claims = script(
        monkeypatch,
        ScriptedClaims(
            watch={"claim-3": ConnectionResetError(104, "reset")}, delete={"claim-3": ConnectionRefusedError(111, "")}
        ),
    )
    with pytest.raises(BatchError) as raised:
        create_many("aio", 3, namespace="ns", concurrency=1, timeout=5, api_client=api_client)
    assert [type(e) for e in raised.value.errors] == [ApiError]
    assert [c.name for c in raised.value.claims] == ["claim-1", "claim-2"]
    assert sorted(claims.deleted) == ["claim-1", "claim-2", "claim-3"]
    assert_left_behind_is_noted(raised.value.errors[0], "claim-3")


def test_create_many_tries_every_delete_and_still_raises_the_batch_error(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient
) -> None:
    # claim-3 fails; of the Ready claims, claim-1 cannot be deleted: claim-2 still is.
    claims = script(
        monkeypatch,
        ScriptedClaims(
            watch={"claim-3": ConnectionResetError(104, "reset")}, delete={"claim-1": ConnectionRefusedError(111, "")}
        ),
    )
    with pytest.raises(BatchError) as raised:
        create_many("aio", 3, namespace="ns", concurrency=1, timeout=5, api_client=api_client)
    assert sorted(claims.deleted) == ["claim-1", "claim-2", "claim-3"]
    assert [c.name for c in raised.value.claims] == ["claim-1", "claim-2"]
    assert_left_behind_is_noted(raised.value, "claim-1")


def test_async_connection_lost_on_the_cleanup_delete_raises_the_wait_error(monkeypatch: pytest.MonkeyPatch) -> None:
    dropped = aiohttp.ServerDisconnectedError()
    claims = script(
        monkeypatch,
        ScriptedClaims(
            watch={"claim-1": dropped}, delete={"claim-1": ConnectionRefusedError(111, "refused")}, asynchronous=True
        ),
    )

    async def create() -> None:
        async with k8s_async.ApiClient() as client:
            await AsyncSandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=client)

    with pytest.raises(ApiError) as raised:
        asyncio.run(create())
    assert str(raised.value).startswith("watching SandboxClaim ns/claim-1 failed")
    assert raised.value.__cause__ is dropped
    assert claims.deleted == ["claim-1"]
    assert_left_behind_is_noted(raised.value, "claim-1")


def test_async_connection_lost_on_the_read_after_410_is_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    reset = ConnectionResetError(104, "reset")
    claims = script(
        monkeypatch,
        ScriptedClaims(
            watch={"claim-1": k8s_async.exceptions.ApiException(status=410)}, get={"claim-1": reset}, asynchronous=True
        ),
    )

    async def create() -> None:
        async with k8s_async.ApiClient() as client:
            await AsyncSandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=client)

    with pytest.raises(ApiError) as raised:
        asyncio.run(create())
    assert str(raised.value).startswith("reading SandboxClaim ns/claim-1 failed")
    assert raised.value.__cause__ is reset
    assert claims.deleted == ["claim-1"]


def test_async_create_many_deletes_the_ready_claims_when_a_later_one_loses_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    claims = script(
        monkeypatch,
        ScriptedClaims(
            watch={"claim-3": aiohttp.ServerDisconnectedError()},
            delete={"claim-3": ConnectionRefusedError(111, ""), "claim-1": ConnectionRefusedError(111, "")},
            asynchronous=True,
        ),
    )

    async def batch() -> None:
        async with k8s_async.ApiClient() as client:
            await create_many_async("aio", 3, namespace="ns", concurrency=1, timeout=5, api_client=client)

    with pytest.raises(BatchError) as raised:
        asyncio.run(batch())
    assert [type(e) for e in raised.value.errors] == [ApiError]
    assert sorted(c.name for c in raised.value.claims) == ["claim-1", "claim-2"]
    assert sorted(claims.deleted) == ["claim-1", "claim-2", "claim-3"]
    assert_left_behind_is_noted(raised.value.errors[0], "claim-3")
    assert_left_behind_is_noted(raised.value, "claim-1")
