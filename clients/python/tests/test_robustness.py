"""Both clients when the create's answer is lost, the API server hangs or
throttles, a watch connection drops, or ``create_many`` is interrupted (no
cluster needed: the API is scripted, see ``scripted_api``, or a local socket
that never answers).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import urllib3
from kubernetes import client as k8s
from kubernetes_asyncio import client as k8s_async
from scripted_api import Late, ScriptedClaims, Written, api_exception, notes

from sandbox_client import (
    ApiError,
    AsyncSandboxClaim,
    BatchError,
    ClaimDeleted,
    ClaimRejected,
    SandboxClaim,
    async_client,
    create_many,
    create_many_async,
)
from sandbox_client import _protocol as protocol


@pytest.fixture
def api_client() -> Iterator[k8s.ApiClient]:
    """A client that is never used for I/O: every call goes to the script."""
    client = k8s.ApiClient()
    yield client
    client.close()


def script(monkeypatch: pytest.MonkeyPatch, claims: ScriptedClaims) -> ScriptedClaims:
    monkeypatch.setattr(k8s, "CustomObjectsApi", lambda _client: claims)
    monkeypatch.setattr(k8s_async, "CustomObjectsApi", lambda _client: claims)
    monkeypatch.setattr(protocol, "new_name", claims.new_name)
    return claims


def reset() -> urllib3.exceptions.ProtocolError:
    return urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))


# 1. The client chooses the name, so a create without an answer is cleaned up.


def test_the_client_chooses_a_valid_name_from_the_prefix() -> None:
    name = protocol.new_name("py3-12-")
    assert len(name) == len("py3-12-") + 5 and name.startswith("py3-12-")
    assert all(c in protocol.SUFFIX_ALPHABET for c in name[-5:])
    plan = protocol.CreatePlan({"metadata": {"generateName": "x" * 57 + "-"}}, "ns", time.monotonic() + 5)
    body = plan.body()
    assert "generateName" not in body["metadata"] and len(body["metadata"]["name"]) == 63
    assert body["metadata"]["annotations"][protocol.REQUEST_ID] == plan.token
    assert not protocol.REQUEST_ID.startswith("agents.x-k8s.io/")


def test_a_create_whose_answer_is_lost_deletes_its_own_claim_by_uid(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient
) -> None:
    claims = script(monkeypatch, ScriptedClaims(create=[Written(reset())]))
    with pytest.raises(ApiError) as raised:
        SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client)
    assert str(raised.value).startswith("creating a SandboxClaim failed")
    assert raised.value.claim == "claim-1"
    assert claims.deleted == ["claim-1"] and "claim-1" not in claims.stored
    assert uid_preconditions(claims) == ["uid-claim-1"]


def test_ctrl_c_during_the_create_deletes_the_claim(monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient) -> None:
    claims = script(monkeypatch, ScriptedClaims(create=[Written(KeyboardInterrupt())]))
    with pytest.raises(KeyboardInterrupt):
        SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client)
    assert claims.deleted == ["claim-1"]


def test_async_cancel_during_the_create_deletes_the_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    claims = script(monkeypatch, ScriptedClaims(create=[Written(asyncio.CancelledError())], asynchronous=True))

    async def create() -> None:
        async with k8s_async.ApiClient() as client:
            await AsyncSandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=client)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(create())
    assert claims.deleted == ["claim-1"]


def test_a_504_after_the_write_is_retried_and_takes_its_own_claim(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient
) -> None:
    claims = script(monkeypatch, ScriptedClaims(create=[Written(api_exception(504, "Timeout", Retry_After="0"))]))
    with SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client) as sb:
        assert sb.name == "claim-1" and sb.uid == "uid-claim-1"
        assert claims.created == ["claim-1", "claim-1"] and claims.deleted == []
    assert claims.deleted == ["claim-1"]


def test_a_name_taken_by_someone_else_gets_a_new_suffix_and_is_never_deleted(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient
) -> None:
    claims = script(monkeypatch, ScriptedClaims(taken={"claim-1"}, watch={"claim-2": api_exception(500)}))
    with pytest.raises(ApiError):
        SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client)
    assert claims.created == ["claim-1", "claim-2"]
    assert claims.deleted == ["claim-2"]


def test_a_definite_refusal_deletes_nothing(monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient) -> None:
    claims = script(monkeypatch, ScriptedClaims(create=[api_exception(403, "Forbidden")]))
    with pytest.raises(ClaimRejected):
        SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client)
    claims2 = script(monkeypatch, ScriptedClaims(taken={"mine"}))
    with pytest.raises(ClaimRejected) as raised:
        SandboxClaim.create(template="aio", name="mine", namespace="ns", timeout=5, api_client=api_client)
    assert raised.value.status == 409
    assert claims.deleted == [] and claims2.deleted == []


# 5. 429 and 5xx are the API's, retried within the deadline.


def test_429_is_retried_after_retry_after(monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient) -> None:
    claims = script(monkeypatch, ScriptedClaims(create=[api_exception(429, "TooManyRequests", Retry_After="0.2")]))
    started = time.monotonic()
    with SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client) as sb:
        assert sb.name == "claim-1"
    assert time.monotonic() - started >= 0.2
    assert claims.created == ["claim-1", "claim-1"]


def test_429_past_the_deadline_is_an_api_error_not_a_rejection(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient
) -> None:
    claims = script(monkeypatch, ScriptedClaims(create=[api_exception(429, "TooManyRequests", Retry_After="30")]))
    started = time.monotonic()
    with pytest.raises(ApiError) as raised:
        SandboxClaim.create(template="aio", namespace="ns", timeout=2, api_client=api_client)
    assert raised.value.status == 429 and not isinstance(raised.value, ClaimRejected)
    assert time.monotonic() - started < 1
    assert claims.deleted == []  # a 429 wrote nothing


def test_async_503_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    claims = script(
        monkeypatch,
        ScriptedClaims(create=[api_exception(503, "ServiceUnavailable", asynchronous=True)], asynchronous=True),
    )

    async def create() -> str:
        async with k8s_async.ApiClient() as client:
            async with AsyncSandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=client) as sb:
                return sb.name

    assert asyncio.run(create()) == "claim-1"
    assert claims.created == ["claim-1", "claim-1"]


def test_a_watch_reset_is_resumed(monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient) -> None:
    claims = script(monkeypatch, ScriptedClaims(watch={"claim-1": [reset(), reset()]}))
    with SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client) as sb:
        assert sb.name == "claim-1"
    assert [c[0] for c in claims.calls if c[0] == "watch"] == ["watch"] * 3


def test_async_watch_disconnect_is_resumed(monkeypatch: pytest.MonkeyPatch) -> None:
    script(monkeypatch, ScriptedClaims(watch={"claim-1": [aiohttp.ServerDisconnectedError()]}, asynchronous=True))

    async def create() -> str:
        async with k8s_async.ApiClient() as client:
            sb = await AsyncSandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=client)
            await sb.delete()
            return sb.name

    assert asyncio.run(create()) == "claim-1"


# 2. Every call is bounded.


def test_every_call_carries_a_timeout_within_the_deadline(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient
) -> None:
    claims = script(monkeypatch, ScriptedClaims(watch={"claim-1": [api_exception(410, "Gone")]}))
    SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client).delete()
    seen = {method: kw.get("_request_timeout") for method, _, kw in claims.calls}
    assert set(seen) == {"create", "watch", "get", "delete"}
    for method, bound in seen.items():
        assert isinstance(bound, tuple) and len(bound) == 2, (method, bound)
        connect, read = bound
        limit = protocol.DELETE_TIMEOUT if method == "delete" else 5 + 1
        assert 0 < connect <= protocol.CONNECT_TIMEOUT and 0 < read <= limit, (method, bound)


@pytest.fixture
def hung_server() -> Iterator[str]:
    """An address that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def kubeconfig_for(tmp_path: Path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: ctx, context: {{cluster: c, user: u}}}}]
current-context: ctx
"""
    )
    return str(path)


def test_a_hung_api_server_ends_the_create_at_its_timeout(
    monkeypatch: pytest.MonkeyPatch, hung_server: str, tmp_path: Path
) -> None:
    monkeypatch.setattr(protocol, "DELETE_TIMEOUT", 0.5)
    kubeconfig = kubeconfig_for(tmp_path, hung_server)
    outcome: list[BaseException] = []

    def create() -> None:
        try:
            SandboxClaim.create(template="aio", namespace="ns", timeout=1, kubeconfig=kubeconfig)
        except BaseException as e:  # noqa: B036 - handed to the test thread
            outcome.append(e)

    started = time.monotonic()
    thread = threading.Thread(target=create, daemon=True)
    thread.start()
    thread.join(6)
    assert not thread.is_alive(), "the create hung past its timeout"
    assert time.monotonic() - started < 3
    assert len(outcome) == 1 and isinstance(outcome[0], ApiError), outcome
    assert str(outcome[0]).startswith("creating a SandboxClaim failed")


def test_async_hung_api_server_ends_the_create_at_its_timeout(
    monkeypatch: pytest.MonkeyPatch, hung_server: str
) -> None:
    monkeypatch.setattr(protocol, "DELETE_TIMEOUT", 0.5)

    async def create() -> None:
        configuration = k8s_async.Configuration()
        configuration.host = hung_server
        async with k8s_async.ApiClient(configuration) as client:
            await asyncio.wait_for(
                AsyncSandboxClaim.create(template="aio", namespace="ns", timeout=1, api_client=client), 6
            )

    started = time.monotonic()
    with pytest.raises(ApiError) as raised:
        asyncio.run(create())
    assert time.monotonic() - started < 3
    assert "no answer within 1s" in str(raised.value)


# 3. and 4. create_many: Ctrl-C twice still cleans up; a failure starts no more claims.


def test_create_many_cleans_up_after_ctrl_c_twice(monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient) -> None:
    claims = script(monkeypatch, ScriptedClaims(waiting={"claim-2"}))

    def interrupt() -> None:
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        create_many("aio", 2, namespace="ns", concurrency=2, timeout=20, api_client=api_client)
    deadline = time.monotonic() + 3
    while sorted(claims.deleted) != ["claim-1", "claim-2"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(claims.deleted) == ["claim-1", "claim-2"]
    assert time.monotonic() - started < 4


def test_create_many_starts_no_more_claims_after_a_failure(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient
) -> None:
    failing = {f"claim-{i}": api_exception(500, "InternalError") for i in range(1, 11)}
    claims = script(monkeypatch, ScriptedClaims(watch=dict(failing)))
    with pytest.raises(BatchError) as raised:
        create_many("aio", 10, namespace="ns", concurrency=1, timeout=5, api_client=api_client)
    assert claims.created == ["claim-1"]
    assert len(raised.value.errors) == 1 and raised.value.not_started == 9
    assert "9 more not started" in str(raised.value)


def test_async_create_many_starts_no_more_claims_after_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    failing = {f"claim-{i}": api_exception(500, "InternalError", asynchronous=True) for i in range(1, 11)}
    claims = script(monkeypatch, ScriptedClaims(watch=dict(failing), asynchronous=True))

    async def batch() -> None:
        async with k8s_async.ApiClient() as client:
            await create_many_async("aio", 10, namespace="ns", concurrency=1, timeout=5, api_client=client)

    with pytest.raises(BatchError) as raised:
        asyncio.run(batch())
    assert claims.created == ["claim-1"] and raised.value.not_started == 9


# 6. and 8. The async batch's own client.


@pytest.fixture
def kubeconfig(tmp_path: Path) -> str:
    return kubeconfig_for(tmp_path, "http://127.0.0.1:1")


def recorded_clients(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    clients: list[Any] = []
    original = async_client.connect

    async def connect(*args: Any, **kwargs: Any) -> Any:
        client = await original(*args, **kwargs)
        clients.append(client)
        return client

    monkeypatch.setattr(async_client, "connect", connect)
    return clients


def test_async_create_many_sizes_its_connection_pool(monkeypatch: pytest.MonkeyPatch, kubeconfig: str) -> None:
    script(monkeypatch, ScriptedClaims(asynchronous=True))
    clients = recorded_clients(monkeypatch)

    async def batch() -> None:
        async with await create_many_async("aio", 1, namespace="ns", concurrency=150, kubeconfig=kubeconfig):
            pass

    asyncio.run(batch())
    assert clients[0].configuration.connection_pool_maxsize >= 152


def test_async_claims_handed_back_by_a_failed_batch_keep_their_client(
    monkeypatch: pytest.MonkeyPatch, kubeconfig: str
) -> None:
    claims = script(
        monkeypatch, ScriptedClaims(watch={"claim-3": api_exception(500, asynchronous=True)}, asynchronous=True)
    )
    clients = recorded_clients(monkeypatch)

    async def batch() -> None:
        try:
            await create_many_async(
                "aio", 3, namespace="ns", concurrency=1, timeout=5, kubeconfig=kubeconfig, delete_on_exit=False
            )
        except BatchError as e:
            session = clients[0].rest_client.pool_manager
            assert len(e.claims) == 2 and not session.closed
            await e.claims[0].delete()
            assert not session.closed
            await e.claims[1].delete()
            assert session.closed
            raise

    with pytest.raises(BatchError):
        asyncio.run(batch())
    assert claims.deleted == ["claim-1", "claim-2"]


async def async_create(**kwargs: Any) -> None:
    await AsyncSandboxClaim.create(**kwargs)


def test_a_missing_kubeconfig_or_context_is_an_api_error_naming_it(tmp_path: Path, kubeconfig: str) -> None:
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ApiError) as raised:
        SandboxClaim.create(template="aio", kubeconfig=missing)
    assert missing in str(raised.value)
    with pytest.raises(ApiError) as raised:
        SandboxClaim.create(template="aio", kubeconfig=kubeconfig, context="no-such-context")
    assert "no-such-context" in str(raised.value) and kubeconfig in str(raised.value)
    with pytest.raises(ApiError) as raised:
        asyncio.run(async_create(template="aio", kubeconfig=missing))
    assert missing in str(raised.value)


# 7. uids.


def test_a_claim_recreated_under_the_name_counts_as_deleted(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient
) -> None:
    claims = script(
        monkeypatch, ScriptedClaims(watch={"claim-1": [api_exception(410, "Gone")]}, uids={"claim-1": "someone-else"})
    )
    with pytest.raises(ClaimDeleted):
        SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client)
    deletes = [kw for method, _, kw in claims.calls if method == "delete"]
    assert len(deletes) == 1 and deletes[0]["body"].preconditions.uid == "uid-claim-1"


def test_delete_is_conditioned_on_the_uid_and_a_409_means_gone(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient
) -> None:
    claims = script(monkeypatch, ScriptedClaims(delete={"claim-1": api_exception(409, "Conflict")}))
    sb = SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client)
    sb.delete()  # the precondition failed: the name is another claim's now, ours is gone
    (kw,) = [kw for method, _, kw in claims.calls if method == "delete"]
    assert kw["body"].preconditions.uid == "uid-claim-1"
    assert kw["body"].propagation_policy == "Background"


# 9. After an unknown outcome, the cleanup deletes only its own claim.


def uid_preconditions(claims: ScriptedClaims) -> list[str | None]:
    """The uid precondition of every DELETE sent."""
    return [getattr(kw["body"].preconditions, "uid", None) for method, _, kw in claims.calls if method == "delete"]


def gets(claims: ScriptedClaims) -> list[str]:
    return [name for method, name, _ in claims.calls if method == "get"]


def assert_left_alone_is_noted(error: BaseException, claim: str) -> None:
    if sys.version_info >= (3, 11):
        assert any(f"SandboxClaim ns/{claim} is not this create's" in n and "left alone" in n for n in notes(error)), (
            notes(error)
        )


def test_only_a_claim_with_this_creates_token_is_its_own() -> None:
    plan = protocol.CreatePlan({"metadata": {"name": "mine"}}, "ns", time.monotonic() + 5)
    assert plan.ours({"metadata": {"uid": "u1", "annotations": {protocol.REQUEST_ID: plan.token}}}) == "u1"
    assert plan.ours({"metadata": {"uid": "u1", "annotations": {protocol.REQUEST_ID: "someone"}}}) is None
    assert plan.ours({"metadata": {"uid": "u1"}}) is None
    note = protocol.not_ours("ns", "mine", {"metadata": {"uid": "u1"}})
    assert "not this create's" in note and "no sandbox-client/request-id annotation" in note


def failure_of_a_create(kind: str, asynchronous: bool) -> BaseException:
    """The create's failure: an answered 500 (its Retry-After past the
    deadline), no answer, or Ctrl-C / task cancellation during the POST."""
    if kind == "500":
        return api_exception(500, "InternalError", asynchronous=asynchronous, Retry_After="30")
    if kind == "no answer":
        return ConnectionResetError(104, "reset")
    return asyncio.CancelledError() if asynchronous else KeyboardInterrupt()


FAILURES_OF_A_CREATE = ["500", "no answer", "interrupted"]


@pytest.mark.parametrize("failure", FAILURES_OF_A_CREATE)
def test_a_failed_create_of_a_name_in_use_deletes_nothing(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient, failure: str
) -> None:
    # "mine" is someone's claim in use; the POST fails before the API server
    # checks the name (a webhook down: 500; no answer; Ctrl-C).
    error = failure_of_a_create(failure, asynchronous=False)
    claims = script(monkeypatch, ScriptedClaims(taken={"mine"}, create=[error]))
    with pytest.raises((ApiError, KeyboardInterrupt)) as raised:
        SandboxClaim.create(template="aio", name="mine", namespace="ns", timeout=2, api_client=api_client)
    assert claims.created == ["mine"]
    assert claims.deleted == [], "someone else's claim was deleted"
    assert gets(claims) == ["mine"]  # found at once: not ours, left alone
    assert_left_alone_is_noted(raised.value, "mine")


@pytest.mark.parametrize("failure", FAILURES_OF_A_CREATE)
def test_async_failed_create_of_a_name_in_use_deletes_nothing(monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    error = failure_of_a_create(failure, asynchronous=True)
    claims = script(monkeypatch, ScriptedClaims(taken={"mine"}, create=[error], asynchronous=True))
    raised: list[BaseException] = []

    async def create() -> None:
        async with k8s_async.ApiClient() as client:
            try:
                await AsyncSandboxClaim.create(
                    template="aio", name="mine", namespace="ns", timeout=2, api_client=client
                )
            except BaseException as e:  # noqa: B036 - checked below
                raised.append(e)
                raise

    with pytest.raises((ApiError, asyncio.CancelledError)):
        asyncio.run(create())
    assert claims.created == ["mine"]
    assert claims.deleted == [], "someone else's claim was deleted"
    assert gets(claims) == ["mine"]
    assert_left_alone_is_noted(raised[0], "mine")


def test_a_create_written_after_the_first_cleanup_read_is_still_deleted(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient
) -> None:
    # The answer is lost; the API server stores the claim only after the
    # cleanup's first read found nothing.
    claims = script(monkeypatch, ScriptedClaims(create=[Late(reset())]))
    with pytest.raises(ApiError):
        SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client)
    assert "claim-1" not in claims.stored, "the late claim leaked"
    assert gets(claims) == ["claim-1", "claim-1"]
    assert claims.deleted == ["claim-1"] and uid_preconditions(claims) == ["uid-claim-1"]


def test_async_create_written_after_the_first_cleanup_read_is_still_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    claims = script(monkeypatch, ScriptedClaims(create=[Late(asyncio.CancelledError())], asynchronous=True))

    async def create() -> None:
        async with k8s_async.ApiClient() as client:
            await AsyncSandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=client)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(create())
    assert "claim-1" not in claims.stored, "the late claim leaked"
    assert claims.deleted == ["claim-1"] and uid_preconditions(claims) == ["uid-claim-1"]


def test_a_create_without_a_clear_answer_is_looked_for_a_bounded_time(
    monkeypatch: pytest.MonkeyPatch, api_client: k8s.ApiClient
) -> None:
    monkeypatch.setattr(protocol, "LATE_CREATE_WAIT", 1.0)
    claims = script(monkeypatch, ScriptedClaims(create=[reset()]))
    started = time.monotonic()
    with pytest.raises(ApiError):
        SandboxClaim.create(template="aio", namespace="ns", timeout=5, api_client=api_client)
    assert 1.0 <= time.monotonic() - started < 2.0
    assert len(gets(claims)) == 3 and claims.deleted == []  # at 0, 0.5 and 1 s: never written
    # A 5xx is no clear answer either (the API server may go on with a
    # create after a 504): looked for the same bounded time.
    claims = script(monkeypatch, ScriptedClaims(create=[api_exception(500, "InternalError", Retry_After="30")]))
    started = time.monotonic()
    with pytest.raises(ApiError):
        SandboxClaim.create(template="aio", namespace="ns", timeout=2, api_client=api_client)
    assert 1.0 <= time.monotonic() - started < 2.0
    assert len(gets(claims)) == 3 and claims.deleted == []
