"""The asyncio twin of :mod:`sandbox_client.sync_client`, on ``kubernetes_asyncio``.

Same flow and guarantees: the client picks the claim's name, one create,
ONE watch on that claim from the create's resourceVersion, the same
decision per event (:func:`~sandbox_client._decide.check`), the same typed
errors, the same retries (408, 429, 5xx on the create; a reset watch
resumed), the claim deleted again on failure (the create without an answer
included) and at the end of ``async with``, never by name alone (the
same :meth:`AsyncClaimsApi.cleanup`: by uid, a claim without this create's
token left alone, a claim of an abandoned create looked for again for a
few seconds), the same notes when a cleanup fails. The deadline is exact here: the create and the wait run in one
``asyncio.wait_for`` (a create still unanswered then raises
:class:`~sandbox_client.ApiError` "no answer within Ns"); each DELETE has
its own bound (``DELETE_TIMEOUT``). A cancelled task deletes its claim too
(cancelled during the create included), and a cancelled ``create_many``
its Ready claims. With ``raise_on_error`` a failed claim starts no more.
``create_many`` builds its client with a connection pool of
``concurrency + 2``; when it fails with ``delete_on_exit=False``, the
claims it hands back share that client, closed when the last of them is
deleted or closed.

``AsyncSandboxClaim.create(...)`` can be awaited (``sb = await ...``) or
used directly as ``async with AsyncSandboxClaim.create(...) as sb``.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any, Awaitable, Dict, Generator, List, Mapping, Optional, Tuple, cast

try:
    import aiohttp
    from kubernetes_asyncio import client as k8s
    from kubernetes_asyncio import config as k8s_config
    from kubernetes_asyncio import watch as k8s_watch
    from kubernetes_asyncio.client.exceptions import ApiException
except ImportError as missing:  # pragma: no cover - depends on the install
    raise ImportError(
        "the asyncio client needs kubernetes_asyncio: pip install 'sandbox-operator-client[async]'"
    ) from missing

from . import _protocol as protocol
from . import errors
from ._holders import BatchHolder, ClaimHolder
from .status import SandboxInfo, Waiting, claim_body


async def connect(kubeconfig: Optional[str] = None, context: Optional[str] = None, pool_size: int = 0) -> k8s.ApiClient:
    """An ApiClient from ``kubeconfig`` (else ``$KUBECONFIG`` / ``~/.kube/config``),
    falling back to the in-cluster service account; ``pool_size`` bounds
    its concurrent connections (``connection_pool_maxsize``). A
    configuration that cannot be loaded is an
    :class:`~sandbox_client.ApiError` naming it."""
    configuration = k8s.Configuration()
    if pool_size:
        configuration.connection_pool_maxsize = pool_size
    kubeconfig = protocol.kubeconfig_path(kubeconfig)
    try:
        if kubeconfig:
            await k8s_config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        else:
            k8s_config.load_incluster_config(client_configuration=configuration)
    except (k8s_config.ConfigException, OSError) as e:
        raise protocol.config_failed(e, kubeconfig, context) from e
    return k8s.ApiClient(configuration)


class _SharedClient:
    """One ApiClient several claims use (those a failed ``create_many``
    hands back with ``delete_on_exit=False``): closed when the last of them
    lets go of it."""

    def __init__(self, api_client: k8s.ApiClient, users: int) -> None:
        self._api_client = api_client
        self._users = users

    async def release(self) -> None:
        """One user is done; the last one closes the client."""
        self._users -= 1
        if self._users == 0:
            await self._api_client.close()


class AsyncClaimsApi:
    """Create / watch / delete SandboxClaims through one asyncio ApiClient."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)
        self._shared: Optional[_SharedClient] = None

    def sharing(self, shared: _SharedClient) -> "AsyncClaimsApi":
        """The same API, its client closed through ``shared``."""
        api = copy.copy(self)
        api._shared = shared
        return api

    async def close(self) -> None:
        """Closes the client (or lets go of a shared one)."""
        if self._shared is not None:
            await self._shared.release()
        else:
            await self.api_client.close()

    async def create(self, plan: protocol.CreatePlan, timeout: float) -> Tuple[str, str]:
        """POSTs the claim of ``plan`` until it is created (its name and
        resourceVersion), retrying what the plan says; a definite refusal
        raises :class:`~sandbox_client.ClaimRejected`, anything else
        :class:`~sandbox_client.ApiError`."""
        namespace = plan.namespace
        while True:
            plan.sending()
            try:
                created = await self.custom.create_namespaced_custom_object(
                    *protocol.list_args(namespace),
                    plan.body(),
                    _request_timeout=protocol.request_timeout(plan.deadline),
                )
            except ApiException as e:
                step = plan.failed(e)
                if isinstance(step, protocol.ReadBack):
                    try:
                        obj: Optional[Dict[str, Any]] = await self.get(namespace, plan.name, plan.deadline)
                    except errors.ClaimDeleted:
                        obj = None
                    adopted = plan.adopt(obj, e)
                    if isinstance(adopted, tuple):
                        return adopted
                    step = adopted
                if isinstance(step, errors.SandboxError):
                    raise step from e
                if isinstance(step, protocol.Retry) and step.delay > 0:
                    await asyncio.sleep(step.delay)
                continue
            except asyncio.TimeoutError as e:  # before OSError: on 3.11 it is one
                raise plan.no_answer_within(timeout) from e
            except (OSError, aiohttp.ClientError) as e:
                raise plan.unanswered(e) from e
            return plan.answered(cast(Dict[str, Any], created))

    async def get(self, namespace: str, name: str, deadline: Optional[float] = None) -> Dict[str, Any]:
        """GET the claim (bounded by ``deadline`` plus a second, else by
        ``DELETE_TIMEOUT``)."""
        bound = protocol.request_timeout(deadline, 1.0) if deadline is not None else protocol.delete_timeout()
        try:
            obj = await self.custom.get_namespaced_custom_object(
                *protocol.list_args(namespace), name, _request_timeout=bound
            )
            return cast(Dict[str, Any], obj)
        except ApiException as e:
            raise protocol.read_failed(e, namespace, name) from e
        except (OSError, asyncio.TimeoutError, aiohttp.ClientError) as e:
            raise protocol.read_unreachable(e, namespace, name) from e

    async def delete(self, namespace: str, name: str, uid: Optional[str] = None) -> bool:
        """DELETE the claim, only if it still has ``uid`` when given; False
        when it was already gone. Bounded by ``DELETE_TIMEOUT``."""
        options = k8s.V1DeleteOptions(
            propagation_policy="Background", preconditions=k8s.V1Preconditions(uid=uid) if uid else None
        )
        try:
            await asyncio.wait_for(
                self.custom.delete_namespaced_custom_object(
                    *protocol.list_args(namespace), name, body=options, _request_timeout=protocol.delete_timeout()
                ),
                protocol.DELETE_TIMEOUT,
            )
            return True
        except ApiException as e:
            error = protocol.delete_failed(e, namespace, name, uid)
            if error is None:
                return False
            raise error from e
        except asyncio.TimeoutError as e:
            raise protocol.delete_unreachable(
                TimeoutError(f"no answer within {protocol.DELETE_TIMEOUT:g}s"), namespace, name
            ) from e
        except (OSError, aiohttp.ClientError) as e:
            raise protocol.delete_unreachable(e, namespace, name) from e

    async def cleanup(self, plan: protocol.CreatePlan) -> Optional[str]:
        """Deletes the claim ``plan`` may have created, never another: the
        asyncio :meth:`sandbox_client.sync_client.ClaimsApi.cleanup` (by the
        create's uid, else read by name and deleted with its uid only when it
        carries the plan's token; someone else's is left alone, the note
        returned says so; absent after a create without a clear answer
        (none, a timeout, cancellation, a 408 or 5xx), looked for again
        for ``LATE_CREATE_WAIT`` seconds). Each call is bounded by
        ``DELETE_TIMEOUT``."""
        namespace, name = plan.namespace, plan.name
        if plan.uid:
            await self.delete(namespace, name, plan.uid)
            return None
        until = time.monotonic() + plan.late_wait()
        while True:
            try:
                obj: Optional[Dict[str, Any]] = await asyncio.wait_for(
                    self.get(namespace, name), protocol.DELETE_TIMEOUT
                )
            except errors.ClaimDeleted:
                obj = None
            except asyncio.TimeoutError as e:
                raise protocol.read_unreachable(
                    TimeoutError(f"no answer within {protocol.DELETE_TIMEOUT:g}s"), namespace, name
                ) from e
            if obj is not None:
                uid = plan.ours(obj)
                if uid is None:
                    return protocol.not_ours(namespace, name, obj)
                await self.delete(namespace, name, uid)
                return None
            left = until - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(protocol.LATE_CREATE_POLL, left))

    async def watch(
        self,
        namespace: str,
        name: str,
        version: str,
        started: float,
        timeout: float,
        seen: List[Waiting],
        uid: Optional[str] = None,
    ) -> SandboxInfo:
        """Watches the one claim from ``version`` until Ready (its facts) or
        failed (raises); appends every waiting state to ``seen``. The caller
        bounds it (``asyncio.wait_for``)."""
        deadline = started + timeout
        resets = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                async with k8s_watch.Watch() as stream:
                    async for event in stream.stream(
                        self.custom.list_namespaced_custom_object,
                        *protocol.list_args(namespace),
                        **protocol.watch_kwargs(name, version, remaining),
                        _request_timeout=protocol.request_timeout(deadline, 1.0),
                    ):
                        version, state = protocol.observe(namespace, name, event, started, uid)
                        if isinstance(state, SandboxInfo):
                            return state
                        seen.append(state)
            except ApiException as e:
                error = protocol.watch_failed(e, namespace, name)
                if error is not None:
                    raise error from e
                # Out of the watch window: read once, watch on from there.
                obj = await self.get(namespace, name, deadline)
                version, state = protocol.read(namespace, name, obj, started, uid)
                if isinstance(state, SandboxInfo):
                    return state
                seen.append(state)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as e:
                # The connection was reset: resume from the last version seen.
                resets += 1
                if time.monotonic() >= deadline:
                    raise protocol.timed_out(namespace, name, timeout, seen[-1] if seen else None) from e
                if resets > protocol.WATCH_RESUMES:
                    raise protocol.watch_unreachable(e, namespace, name) from e
            except (OSError, asyncio.TimeoutError, aiohttp.ClientError) as e:
                if time.monotonic() >= deadline:
                    raise protocol.timed_out(namespace, name, timeout, seen[-1] if seen else None) from e
                raise protocol.watch_unreachable(e, namespace, name) from e


async def _create_and_watch(
    api: AsyncClaimsApi, plan: protocol.CreatePlan, started: float, timeout: float, seen: List[Waiting]
) -> SandboxInfo:
    name, version = await api.create(plan, timeout)
    return await api.watch(plan.namespace, name, version, started, timeout, seen, plan.uid)


async def _create_ready(
    api: AsyncClaimsApi, namespace: str, body: Dict[str, Any], timeout: float, delete_on_failure: bool
) -> Tuple[SandboxInfo, Optional[str]]:
    """Create, then wait, both within ``timeout`` (one ``asyncio.wait_for``):
    the facts and uid of the Ready claim. A claim that may exist when this
    fails or is cancelled (during the create too) is deleted again when
    ``delete_on_failure``, only if it is ours (:meth:`AsyncClaimsApi.cleanup`,
    shielded from a further cancellation)."""
    started = time.monotonic()
    plan = protocol.CreatePlan(body, namespace, started + timeout)
    seen: List[Waiting] = []
    try:
        try:
            info = await asyncio.wait_for(_create_and_watch(api, plan, started, timeout, seen), max(timeout, 0.001))
        except asyncio.TimeoutError:
            if not plan.created:
                raise plan.no_answer_within(timeout) from None
            raise protocol.timed_out(namespace, plan.name, timeout, seen[-1] if seen else None) from None
        return info, plan.uid
    except BaseException as failure:
        if delete_on_failure and plan.may_exist:
            try:
                left_alone = await asyncio.shield(api.cleanup(plan))
                if left_alone:
                    protocol.note(failure, left_alone)
            except errors.SandboxError as cleanup:
                # The original error matters more: it stays the one raised.
                protocol.note_left_behind(failure, cleanup)
            except asyncio.CancelledError:
                pass  # cancelled again while cleaning up: the shielded cleanup goes on
        raise


class AsyncSandboxClaim(ClaimHolder[AsyncClaimsApi]):
    """A Ready sandbox claim; ``async with`` deletes it at the end of the block."""

    @classmethod
    def create(
        cls,
        template: str,
        namespace: str = "default",
        *,
        timeout: float = 60.0,
        name: Optional[str] = None,
        generate_name: Optional[str] = None,
        warm_pool: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        annotations: Optional[Mapping[str, str]] = None,
        delete_on_exit: bool = True,
        api_client: Optional[k8s.ApiClient] = None,
        kubeconfig: Optional[str] = None,
        context: Optional[str] = None,
    ) -> "PendingClaim":
        """Like :meth:`sandbox_client.SandboxClaim.create`; await it or use it
        with ``async with``."""
        body = claim_body(
            template,
            name=name,
            generate_name=generate_name,
            warm_pool=warm_pool,
            labels=labels,
            annotations=annotations,
        )
        return PendingClaim(cls._create(namespace, body, timeout, delete_on_exit, api_client, kubeconfig, context))

    @classmethod
    async def _create(
        cls,
        namespace: str,
        body: Dict[str, Any],
        timeout: float,
        delete_on_exit: bool,
        api_client: Optional[k8s.ApiClient],
        kubeconfig: Optional[str],
        context: Optional[str],
    ) -> "AsyncSandboxClaim":
        owns = api_client is None
        api = AsyncClaimsApi(api_client if api_client is not None else await connect(kubeconfig, context))
        try:
            info, uid = await _create_ready(api, namespace, body, timeout, delete_on_exit)
        except BaseException:
            if owns:
                await api.close()
            raise
        return cls(info, api, delete_on_exit=delete_on_exit, owns_client=owns, uid=uid)

    @classmethod
    async def create_many(cls, template: str, n: int, namespace: str = "default", **kwargs: Any) -> "AsyncClaimBatch":
        """``n`` claims at once; see :func:`create_many`."""
        return await create_many(template, n, namespace, **kwargs)

    async def delete(self) -> None:
        """Deletes the claim now (idempotent; only the claim with our uid)
        and closes a client built for it."""
        if not self._deleted:
            await self._api.delete(self.namespace, self.name, self.uid)
            self._deleted = True
        await self.close()

    async def close(self) -> None:
        """Closes the client built for this claim (the claim is left alone)."""
        if self._owns_client:
            self._owns_client = False
            await self._api.close()

    async def __aenter__(self) -> "AsyncSandboxClaim":
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.delete_on_exit:
            await self.delete()
        else:
            await self.close()

    def __repr__(self) -> str:
        return f"AsyncSandboxClaim({self.namespace}/{self.name}, pod={self.pod_name}, launch={self.launch_type})"


class PendingClaim(Awaitable[AsyncSandboxClaim]):
    """What :meth:`AsyncSandboxClaim.create` returns: awaitable, and an async
    context manager that deletes the claim at the end of the block."""

    def __init__(self, creating: Awaitable[AsyncSandboxClaim]) -> None:
        self._creating = creating
        self._claim: Optional[AsyncSandboxClaim] = None

    def __await__(self) -> Generator[Any, None, AsyncSandboxClaim]:
        return self._creating.__await__()

    async def __aenter__(self) -> AsyncSandboxClaim:
        self._claim = await self._creating
        return self._claim

    async def __aexit__(self, *exc: object) -> None:
        if self._claim is not None:
            await self._claim.__aexit__(*exc)


class AsyncClaimBatch(BatchHolder[AsyncSandboxClaim, AsyncClaimsApi]):
    """The Ready claims of :func:`create_many`; ``async with`` deletes them all."""

    async def delete(self) -> None:
        """Deletes every claim of the batch, ``concurrency`` at a time, and
        closes a client built for it. Every delete is tried; the first that
        failed is raised, the others are noted on it."""
        try:
            failed = await self._delete_claims()
        finally:
            await self.close()
        if failed:
            for other in failed[1:]:
                protocol.note_left_behind(failed[0], other)
            raise failed[0]

    async def _delete_claims(self) -> List[errors.SandboxError]:
        """Deletes every claim, each tried whatever happens to the others;
        returns the failures."""
        gate = asyncio.Semaphore(self._concurrency)

        async def one(claim: AsyncSandboxClaim) -> Optional[errors.SandboxError]:
            async with gate:
                try:
                    await claim.delete()
                except errors.SandboxError as e:
                    return e
                return None

        outcomes = await asyncio.gather(*(one(c) for c in self.claims))
        return [e for e in outcomes if e is not None]

    async def _end_after(self, failure: BaseException) -> None:
        """Ends a batch whose ``create_many`` fails with ``failure``: deletes
        the Ready claims (with ``delete_on_exit``) and closes a client built
        for it. ``failure`` stays the error raised; a claim that cannot be
        deleted is noted on it."""
        try:
            if self.delete_on_exit:
                for cleanup in await self._delete_claims():
                    protocol.note_left_behind(failure, cleanup)
        finally:
            if not self.delete_on_exit and self._owns_client and self.claims:
                self._hand_client_to_claims()
            else:
                await self.close()

    def _hand_client_to_claims(self) -> None:
        """The claims handed back (kept: ``delete_on_exit=False``) share the
        client built for the batch; the last one deleted or closed closes it."""
        shared = _SharedClient(self._api.api_client, len(self.claims))
        for claim in self.claims:
            claim._api = claim._api.sharing(shared)
            claim._owns_client = True
        self._owns_client = False

    async def close(self) -> None:
        """Closes the client the batch built."""
        if self._owns_client:
            self._owns_client = False
            await self._api.close()

    async def __aenter__(self) -> "AsyncClaimBatch":
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.delete_on_exit:
            await self.delete()
        else:
            await self.close()


async def create_many(
    template: str,
    n: int,
    namespace: str = "default",
    *,
    concurrency: int = 16,
    timeout: float = 60.0,
    raise_on_error: bool = True,
    delete_on_exit: bool = True,
    warm_pool: Optional[str] = None,
    generate_name: Optional[str] = None,
    labels: Optional[Mapping[str, str]] = None,
    api_client: Optional[k8s.ApiClient] = None,
    kubeconfig: Optional[str] = None,
    context: Optional[str] = None,
) -> AsyncClaimBatch:
    """The asyncio :func:`sandbox_client.create_many`: ``n`` claims, at most
    ``concurrency`` in flight, returned Ready (same error rules)."""
    if n < 0 or concurrency < 1:
        raise ValueError("n must be >= 0 and concurrency >= 1")
    owns = api_client is None
    api = AsyncClaimsApi(
        api_client if api_client is not None else await connect(kubeconfig, context, pool_size=concurrency + 2)
    )
    body = claim_body(template, generate_name=generate_name, warm_pool=warm_pool, labels=labels)
    gate = asyncio.Semaphore(concurrency)
    claims: List[AsyncSandboxClaim] = []
    failures: List[errors.SandboxError] = []
    give_up = asyncio.Event()  # set by the first failure of a batch that raises: none starts

    async def one() -> None:
        async with gate:
            if give_up.is_set():
                return
            try:
                info, uid = await _create_ready(api, namespace, body, timeout, delete_on_exit)
                claims.append(AsyncSandboxClaim(info, api, delete_on_exit=delete_on_exit, uid=uid))
            except errors.SandboxError as e:
                failures.append(e)
                if raise_on_error:
                    give_up.set()

    batch = AsyncClaimBatch(claims, failures, api, concurrency, delete_on_exit, owns)
    try:
        # Every claim runs to its end before an unexpected error is raised,
        # so none gets Ready after the cleanup below.
        for outcome in await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True):
            if outcome is not None:
                raise outcome
    except BaseException as failure:
        # Not a claim's typed error (cancelled, a bug): the Ready claims go
        # too, even when the task is cancelled again meanwhile.
        await asyncio.shield(batch._end_after(failure))
        raise
    if failures and raise_on_error:
        error = errors.BatchError(failures, claims, requested=n)
        await batch._end_after(error)
        raise error
    return batch
