"""The asyncio twin of :mod:`sandbox_client.sync_client`, on ``kubernetes_asyncio``.

Same flow and guarantees: one create, ONE watch on that claim from the
create's resourceVersion, the same decision per event
(:func:`~sandbox_client._decide.check`), the same typed errors, the claim
deleted again on failure and at the end of ``async with``. The deadline is
exact here (``asyncio.wait_for`` around the wait); a cancelled task deletes
its claim too.

``AsyncSandboxClaim.create(...)`` can be awaited (``sb = await ...``) or
used directly as ``async with AsyncSandboxClaim.create(...) as sb``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from typing import Any, Awaitable, Dict, Generator, Iterator, List, Mapping, Optional, Tuple, cast

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

from . import errors
from ._decide import DELETED, check
from .status import GROUP, PLURAL, VERSION, SandboxFacts, SandboxInfo, Waiting, claim_body


async def connect(kubeconfig: Optional[str] = None, context: Optional[str] = None) -> k8s.ApiClient:
    """An ApiClient from ``kubeconfig`` (else ``$KUBECONFIG`` / ``~/.kube/config``),
    falling back to the in-cluster service account."""
    configuration = k8s.Configuration()
    # $KUBECONFIG is read now, not when the kubernetes package was imported.
    home = os.path.expanduser("~/.kube/config")
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or (home if os.path.exists(home) else None)
    if kubeconfig:
        await k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    else:
        k8s_config.load_incluster_config(client_configuration=configuration)
    return k8s.ApiClient(configuration)


def status_of(error: ApiException) -> Tuple[str, str]:
    """Reason and message of the Status object an API error carries."""
    try:
        body = json.loads(error.body or "{}")
    except ValueError:
        body = {}
    reason = str(body.get("reason") or error.reason or "")
    message = str(body.get("message") or error.body or error.reason or "")
    return reason, message


class AsyncClaimsApi:
    """Create / watch / delete SandboxClaims through one asyncio ApiClient."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)

    async def create(self, namespace: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """POST the claim; a 4xx becomes :class:`~sandbox_client.ClaimRejected`."""
        try:
            created = await self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            return cast(Dict[str, Any], created)
        except ApiException as e:
            reason, message = status_of(e)
            if e.status is not None and 400 <= e.status < 500:
                raise errors.ClaimRejected(namespace, e.status, reason, message) from e
            raise errors.ApiError("creating a SandboxClaim", e.status, message, namespace=namespace) from e
        except (OSError, aiohttp.ClientError) as e:
            raise errors.ApiError("creating a SandboxClaim", None, str(e), namespace=namespace) from e

    async def get(self, namespace: str, name: str) -> Dict[str, Any]:
        """GET the claim."""
        try:
            obj = await self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            return cast(Dict[str, Any], obj)
        except ApiException as e:
            if e.status == 404:
                raise errors.ClaimDeleted(name, namespace, DELETED) from e
            raise errors.ApiError(f"reading SandboxClaim {namespace}/{name}", e.status, status_of(e)[1]) from e

    async def delete(self, namespace: str, name: str) -> bool:
        """DELETE the claim; False when it was already gone."""
        try:
            await self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background"
            )
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise errors.ApiError(f"deleting SandboxClaim {namespace}/{name}", e.status, status_of(e)[1]) from e

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
            last = seen[-1] if seen else None
            raise errors.ClaimTimeout(
                name, namespace, timeout, last.condition if last else None, last.launch_type if last else None
            ) from None

    async def _watch(
        self, namespace: str, name: str, version: str, started: float, timeout: float, seen: List[Waiting]
    ) -> SandboxInfo:
        while True:
            remaining = started + timeout - time.monotonic()
            try:
                async with k8s_watch.Watch() as stream:
                    async for event in stream.stream(
                        self.custom.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        namespace,
                        PLURAL,
                        field_selector=f"metadata.name={name}",
                        resource_version=version,
                        timeout_seconds=max(1, math.ceil(remaining)),
                    ):
                        if event["type"] == "DELETED":
                            raise errors.ClaimDeleted(name, namespace, DELETED)
                        obj = event["raw_object"]
                        version = obj["metadata"]["resourceVersion"]
                        state = check(namespace, name, obj, started)
                        if isinstance(state, SandboxInfo):
                            return state
                        seen.append(state)
            except ApiException as e:
                if e.status != 410:
                    raise errors.ApiError(f"watching SandboxClaim {namespace}/{name}", e.status, status_of(e)[1]) from e
                # Out of the watch window: read once, watch on from there.
                obj = await self.get(namespace, name)
                version = obj["metadata"]["resourceVersion"]
                state = check(namespace, name, obj, started)
                if isinstance(state, SandboxInfo):
                    return state
                seen.append(state)
            except (OSError, aiohttp.ClientError) as e:
                raise errors.ApiError(f"watching SandboxClaim {namespace}/{name}", None, str(e)) from e


async def _create_ready(
    api: AsyncClaimsApi, namespace: str, body: Dict[str, Any], timeout: float, delete_on_failure: bool
) -> SandboxInfo:
    """Create, then wait; a claim that does not get Ready (or whose task is
    cancelled) is deleted again when ``delete_on_failure``."""
    started = time.monotonic()
    created = await api.create(namespace, body)
    name = created["metadata"]["name"]
    try:
        return await api.wait_ready(namespace, name, created["metadata"]["resourceVersion"], started, timeout)
    except BaseException:
        if delete_on_failure:
            try:
                await asyncio.shield(api.delete(namespace, name))
            except (errors.SandboxError, asyncio.CancelledError):
                pass  # the original error matters more
        raise


class AsyncSandboxClaim(SandboxFacts):
    """A Ready sandbox claim; ``async with`` deletes it at the end of the block."""

    def __init__(
        self, info: SandboxInfo, api: AsyncClaimsApi, *, delete_on_exit: bool = True, owns_client: bool = False
    ) -> None:
        self.info = info
        self._api = api
        self.delete_on_exit = delete_on_exit
        self._owns_client = owns_client
        self._deleted = False

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


class AsyncClaimBatch:
    """The Ready claims of :func:`create_many`; ``async with`` deletes them all."""

    def __init__(
        self,
        claims: List[AsyncSandboxClaim],
        failures: List[errors.SandboxError],
        api: AsyncClaimsApi,
        concurrency: int,
        delete_on_exit: bool,
        owns_client: bool,
    ) -> None:
        self.claims = claims
        self.errors = failures
        self._api = api
        self._concurrency = concurrency
        self.delete_on_exit = delete_on_exit
        self._owns_client = owns_client

    def __iter__(self) -> Iterator[AsyncSandboxClaim]:
        return iter(self.claims)

    def __len__(self) -> int:
        return len(self.claims)

    def __getitem__(self, index: int) -> AsyncSandboxClaim:
        return self.claims[index]

    async def delete(self) -> None:
        """Deletes every claim of the batch, ``concurrency`` at a time."""
        gate = asyncio.Semaphore(self._concurrency)

        async def one(claim: AsyncSandboxClaim) -> None:
            async with gate:
                await claim.delete()

        await asyncio.gather(*(one(c) for c in self.claims))
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

    await asyncio.gather(*(one() for _ in range(n)))
    batch = AsyncClaimBatch(claims, failures, api, concurrency, delete_on_exit, owns)
    if failures and raise_on_error:
        if delete_on_exit:
            await batch.delete()
        else:
            await batch.close()
        raise errors.BatchError(failures, claims)
    return batch
