"""The asyncio twin of :mod:`sandbox_client.sync_client`, on ``kubernetes_asyncio``.

Same flow and guarantees: one create, ONE watch on that claim from the
create's resourceVersion, the same decision per event
(:func:`~sandbox_client._decide.check`), the same typed errors, the claim
deleted again on failure and at the end of ``async with``, the same cleanup
when a delete fails. The deadline is exact here (``asyncio.wait_for`` around
the wait); a cancelled task deletes its claim too, and a cancelled
``create_many`` its Ready claims.

``AsyncSandboxClaim.create(...)`` can be awaited (``sb = await ...``) or
used directly as ``async with AsyncSandboxClaim.create(...) as sb``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Dict, Generator, List, Mapping, Optional, cast

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


async def connect(kubeconfig: Optional[str] = None, context: Optional[str] = None) -> k8s.ApiClient:
    """An ApiClient from ``kubeconfig`` (else ``$KUBECONFIG`` / ``~/.kube/config``),
    falling back to the in-cluster service account."""
    configuration = k8s.Configuration()
    kubeconfig = protocol.kubeconfig_path(kubeconfig)
    if kubeconfig:
        await k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    else:
        k8s_config.load_incluster_config(client_configuration=configuration)
    return k8s.ApiClient(configuration)


class AsyncClaimsApi:
    """Create / watch / delete SandboxClaims through one asyncio ApiClient."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)

    async def create(self, namespace: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """POST the claim; a 4xx becomes :class:`~sandbox_client.ClaimRejected`."""
        try:
            created = await self.custom.create_namespaced_custom_object(*protocol.list_args(namespace), body)
            return cast(Dict[str, Any], created)
        except ApiException as e:
            raise protocol.create_failed(e, namespace) from e
        except (OSError, aiohttp.ClientError) as e:
            raise protocol.create_unreachable(e, namespace) from e

    async def get(self, namespace: str, name: str) -> Dict[str, Any]:
        """GET the claim."""
        try:
            obj = await self.custom.get_namespaced_custom_object(*protocol.list_args(namespace), name)
            return cast(Dict[str, Any], obj)
        except ApiException as e:
            raise protocol.read_failed(e, namespace, name) from e
        except (OSError, aiohttp.ClientError) as e:
            raise protocol.read_unreachable(e, namespace, name) from e

    async def delete(self, namespace: str, name: str) -> bool:
        """DELETE the claim; False when it was already gone."""
        try:
            await self.custom.delete_namespaced_custom_object(
                *protocol.list_args(namespace), name, propagation_policy="Background"
            )
            return True
        except ApiException as e:
            error = protocol.delete_failed(e, namespace, name)
            if error is None:
                return False
            raise error from e
        except (OSError, aiohttp.ClientError) as e:
            raise protocol.delete_unreachable(e, namespace, name) from e

    async def wait_ready(
        self, namespace: str, name: str, resource_version: str, started: float, timeout: float
    ) -> SandboxInfo:
        """Watches the one claim until Ready (its facts), failed (raises) or
        ``timeout`` seconds after ``started`` (raises ClaimTimeout with the
        last state)."""
        seen: List[Waiting] = []
        remaining = started + timeout - time.monotonic()
        try:
            return await asyncio.wait_for(
                self._watch(namespace, name, resource_version, started, timeout, seen), max(remaining, 0.001)
            )
        except asyncio.TimeoutError:
            raise protocol.timed_out(namespace, name, timeout, seen[-1] if seen else None) from None

    async def _watch(
        self, namespace: str, name: str, version: str, started: float, timeout: float, seen: List[Waiting]
    ) -> SandboxInfo:
        while True:
            remaining = started + timeout - time.monotonic()
            try:
                async with k8s_watch.Watch() as stream:
                    async for event in stream.stream(
                        self.custom.list_namespaced_custom_object,
                        *protocol.list_args(namespace),
                        **protocol.watch_kwargs(name, version, remaining),
                    ):
                        version, state = protocol.observe(namespace, name, event, started)
                        if isinstance(state, SandboxInfo):
                            return state
                        seen.append(state)
            except ApiException as e:
                error = protocol.watch_failed(e, namespace, name)
                if error is not None:
                    raise error from e
                # Out of the watch window: read once, watch on from there.
                version, state = protocol.read(namespace, name, await self.get(namespace, name), started)
                if isinstance(state, SandboxInfo):
                    return state
                seen.append(state)
            except (OSError, aiohttp.ClientError) as e:
                raise protocol.watch_unreachable(e, namespace, name) from e


async def _create_ready(
    api: AsyncClaimsApi, namespace: str, body: Dict[str, Any], timeout: float, delete_on_failure: bool
) -> SandboxInfo:
    """Create, then wait; a claim that does not get Ready (or whose task is
    cancelled) is deleted again when ``delete_on_failure``."""
    started = time.monotonic()
    name, version = protocol.created_ref(await api.create(namespace, body))
    try:
        return await api.wait_ready(namespace, name, version, started, timeout)
    except BaseException as failure:
        if delete_on_failure:
            try:
                await asyncio.shield(api.delete(namespace, name))
            except errors.SandboxError as cleanup:
                # The original error matters more: it stays the one raised.
                protocol.note_left_behind(failure, cleanup)
            except asyncio.CancelledError:
                pass  # cancelled again while deleting: the shielded delete goes on
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
            info = await _create_ready(api, namespace, body, timeout, delete_on_exit)
        except BaseException:
            if owns:
                await api.api_client.close()
            raise
        return cls(info, api, delete_on_exit=delete_on_exit, owns_client=owns)

    @classmethod
    async def create_many(cls, template: str, n: int, namespace: str = "default", **kwargs: Any) -> "AsyncClaimBatch":
        """``n`` claims at once; see :func:`create_many`."""
        return await create_many(template, n, namespace, **kwargs)

    async def delete(self) -> None:
        """Deletes the claim now (idempotent) and closes a client built for it."""
        if not self._deleted:
            await self._api.delete(self.namespace, self.name)
            self._deleted = True
        await self.close()

    async def close(self) -> None:
        """Closes the client built for this claim (the claim is left alone)."""
        if self._owns_client:
            self._owns_client = False
            await self._api.api_client.close()

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
            await self.close()

    async def close(self) -> None:
        """Closes the client the batch built."""
        if self._owns_client:
            self._owns_client = False
            await self._api.api_client.close()

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
    api = AsyncClaimsApi(api_client if api_client is not None else await connect(kubeconfig, context))
    body = claim_body(template, generate_name=generate_name, warm_pool=warm_pool, labels=labels)
    gate = asyncio.Semaphore(concurrency)
    claims: List[AsyncSandboxClaim] = []
    failures: List[errors.SandboxError] = []

    async def one() -> None:
        async with gate:
            try:
                info = await _create_ready(api, namespace, body, timeout, delete_on_exit)
                claims.append(AsyncSandboxClaim(info, api, delete_on_exit=delete_on_exit))
            except errors.SandboxError as e:
                failures.append(e)

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
        error = errors.BatchError(failures, claims)
        await batch._end_after(error)
        raise error
    return batch
