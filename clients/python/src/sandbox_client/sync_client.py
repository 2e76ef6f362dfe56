"""The blocking client, on the official ``kubernetes`` package.

Flow of :meth:`SandboxClaim.create`: one POST creates the claim; ONE watch
on that claim alone (field selector ``metadata.name``), started from the
resourceVersion the create returned, so no update between the two calls is
missed, reads its status until :func:`~sandbox_client.status.evaluate` says
Ready or failed; leaving the ``with`` block deletes the claim.

Guarantees:

- every API call that fails, a lost connection included, raises a typed
  error (:class:`~sandbox_client.ApiError`, caused by the connection error);
- a claim this client created is deleted again when ``create`` fails after
  the create (timeout, failure, Ctrl-C), unless ``delete_on_exit=False``;
  when that delete fails too, the error raised is still the one that ended
  the wait, with a note naming the claim left behind;
- when ``create_many`` raises, for whatever reason, it has tried to delete
  every claim already Ready (unless ``delete_on_exit=False``);
- the wait ends within about a second of ``timeout`` (the watch's own
  ``timeoutSeconds`` is whole seconds) and never busy-polls;
- a watch the API server ends early is resumed from the last seen
  resourceVersion; a ``410 Gone`` is answered by one GET and a new watch
  from there;
- a client built here is closed when the claim (or batch) is done with it;
  an ``api_client`` passed in is never closed.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Mapping, Optional, cast

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from . import _protocol as protocol
from . import errors
from ._holders import BatchHolder, ClaimHolder
from .status import SandboxInfo, Waiting, claim_body


def connect(kubeconfig: Optional[str] = None, context: Optional[str] = None, pool_size: int = 0) -> k8s.ApiClient:
    """An ApiClient from ``kubeconfig`` (else ``$KUBECONFIG`` / ``~/.kube/config``),
    falling back to the in-cluster service account."""
    configuration = k8s.Configuration()
    if pool_size:
        configuration.connection_pool_maxsize = pool_size
    kubeconfig = protocol.kubeconfig_path(kubeconfig)
    if kubeconfig:
        k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    else:
        k8s_config.load_incluster_config(client_configuration=configuration)
    return k8s.ApiClient(configuration)


class ClaimsApi:
    """Create / watch / delete SandboxClaims through one ApiClient."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)

    def create(self, namespace: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """POST the claim; a 4xx becomes :class:`~sandbox_client.ClaimRejected`."""
        try:
            created = self.custom.create_namespaced_custom_object(*protocol.list_args(namespace), body)
            return cast(Dict[str, Any], created)
        except ApiException as e:
            raise protocol.create_failed(e, namespace) from e
        except (OSError, urllib3.exceptions.HTTPError) as e:
            raise protocol.create_unreachable(e, namespace) from e

    def get(self, namespace: str, name: str) -> Dict[str, Any]:
        """GET the claim."""
        try:
            obj = self.custom.get_namespaced_custom_object(*protocol.list_args(namespace), name)
            return cast(Dict[str, Any], obj)
        except ApiException as e:
            raise protocol.read_failed(e, namespace, name) from e
        except (OSError, urllib3.exceptions.HTTPError) as e:
            raise protocol.read_unreachable(e, namespace, name) from e

    def delete(self, namespace: str, name: str) -> bool:
        """DELETE the claim (its Sandbox, Pod, Service and NetworkPolicy follow
        by garbage collection). False when it was already gone."""
        try:
            self.custom.delete_namespaced_custom_object(
                *protocol.list_args(namespace), name, propagation_policy="Background"
            )
            return True
        except ApiException as e:
            error = protocol.delete_failed(e, namespace, name)
            if error is None:
                return False
            raise error from e
        except (OSError, urllib3.exceptions.HTTPError) as e:
            raise protocol.delete_unreachable(e, namespace, name) from e

    def wait_ready(
        self, namespace: str, name: str, resource_version: str, started: float, timeout: float
    ) -> SandboxInfo:
        """Watches the one claim from ``resource_version`` until it is Ready
        (returns its facts), failed (raises) or ``timeout`` seconds after
        ``started`` (a ``time.monotonic()`` reading) have passed."""
        deadline = started + timeout
        last: Optional[Waiting] = None
        version = resource_version
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise protocol.timed_out(namespace, name, timeout, last)
            events = k8s_watch.Watch().stream(
                self.custom.list_namespaced_custom_object,
                *protocol.list_args(namespace),
                **protocol.watch_kwargs(name, version, remaining),
                _request_timeout=(10, remaining + 10),
            )
            try:
                for event in events:
                    version, state = protocol.observe(namespace, name, event, started)
                    if isinstance(state, SandboxInfo):
                        return state
                    last = state
            except ApiException as e:
                error = protocol.watch_failed(e, namespace, name)
                if error is not None:
                    raise error from e
                # Our resourceVersion fell out of the watch window: read the
                # claim once and watch on from there.
                version, state = protocol.read(namespace, name, self.get(namespace, name), started)
                if isinstance(state, SandboxInfo):
                    return state
                last = state
            except (OSError, urllib3.exceptions.HTTPError) as e:
                raise protocol.watch_unreachable(e, namespace, name) from e
            finally:
                events.close()


class SandboxClaim(ClaimHolder[ClaimsApi]):
    """A Ready sandbox claim; ``with`` deletes it at the end of the block.

    Build it with :meth:`create` (or :meth:`create_many`), not directly.
    """

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
    ) -> "SandboxClaim":
        """Creates a claim of ``template`` and returns once it is Ready.

        ``warm_pool``: ``None``/``"default"`` any pool of the template,
        ``"none"`` always cold, or one pool's name. With ``delete_on_exit``
        (the default) the claim is deleted when the ``with`` block ends, and
        when this call fails after the claim was created.

        Raises :class:`~sandbox_client.ClaimRejected`,
        :class:`~sandbox_client.TemplateNotFound` (and other
        :class:`~sandbox_client.ClaimFailed`),
        :class:`~sandbox_client.ClaimTimeout` or
        :class:`~sandbox_client.ApiError`.
        """
        owns = api_client is None
        api = ClaimsApi(api_client if api_client is not None else connect(kubeconfig, context))
        try:
            body = claim_body(
                template,
                name=name,
                generate_name=generate_name,
                warm_pool=warm_pool,
                labels=labels,
                annotations=annotations,
            )
            info = _create_ready(api, namespace, body, timeout, delete_on_exit)
        except BaseException:
            if owns:
                api.api_client.close()
            raise
        return cls(info, api, delete_on_exit=delete_on_exit, owns_client=owns)

    @classmethod
    def create_many(cls, template: str, n: int, namespace: str = "default", **kwargs: Any) -> "ClaimBatch":
        """``n`` claims at once; see :func:`create_many`."""
        return create_many(template, n, namespace, **kwargs)

    def delete(self) -> None:
        """Deletes the claim now (idempotent) and closes a client built for it."""
        if not self._deleted:
            self._api.delete(self.namespace, self.name)
            self._deleted = True
        if self._owns_client:
            self._api.api_client.close()
            self._owns_client = False

    def __enter__(self) -> "SandboxClaim":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.delete_on_exit:
            self.delete()
        elif self._owns_client:
            self._api.api_client.close()
            self._owns_client = False

    def __repr__(self) -> str:
        return f"SandboxClaim({self.namespace}/{self.name}, pod={self.pod_name}, launch={self.launch_type})"


def _create_ready(
    api: ClaimsApi, namespace: str, body: Dict[str, Any], timeout: float, delete_on_failure: bool
) -> SandboxInfo:
    """Create, then wait; a claim that does not get Ready is deleted again
    when ``delete_on_failure``."""
    started = time.monotonic()
    name, version = protocol.created_ref(api.create(namespace, body))
    try:
        return api.wait_ready(namespace, name, version, started, timeout)
    except BaseException as failure:
        if delete_on_failure:
            try:
                api.delete(namespace, name)
            except errors.SandboxError as cleanup:
                # The original error matters more: it stays the one raised.
                protocol.note_left_behind(failure, cleanup)
        raise


class ClaimBatch(BatchHolder[SandboxClaim, ClaimsApi]):
    """The Ready claims of :func:`create_many` (``errors`` holds the failed
    ones when ``raise_on_error=False``); ``with`` deletes them all at the end."""

    def delete(self) -> None:
        """Deletes every claim of the batch (with the batch's concurrency) and
        closes a client built for it. Every delete is tried; the first that
        failed is raised, the others are noted on it."""
        try:
            failed = self._delete_claims()
        finally:
            self.close()
        if failed:
            for other in failed[1:]:
                protocol.note_left_behind(failed[0], other)
            raise failed[0]

    def _delete_claims(self) -> List[errors.SandboxError]:
        """Deletes every claim, each tried whatever happens to the others;
        returns the failures."""

        def one(claim: SandboxClaim) -> Optional[errors.SandboxError]:
            try:
                claim.delete()
            except errors.SandboxError as e:
                return e
            return None

        with ThreadPoolExecutor(max_workers=self._concurrency) as pool:
            return [e for e in pool.map(one, self.claims) if e is not None]

    def _end_after(self, failure: BaseException) -> None:
        """Ends a batch whose ``create_many`` fails with ``failure``: deletes
        the Ready claims (with ``delete_on_exit``) and closes a client built
        for it. ``failure`` stays the error raised; a claim that cannot be
        deleted is noted on it."""
        try:
            if self.delete_on_exit:
                for cleanup in self._delete_claims():
                    protocol.note_left_behind(failure, cleanup)
        finally:
            self.close()

    def close(self) -> None:
        """Closes the client the batch built (claims are left alone)."""
        if self._owns_client:
            self._api.api_client.close()
            self._owns_client = False

    def __enter__(self) -> "ClaimBatch":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.delete_on_exit:
            self.delete()
        else:
            self.close()


def create_many(
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
) -> ClaimBatch:
    """Creates ``n`` claims of ``template``, at most ``concurrency`` in
    flight (each one create plus one watch), and returns them Ready.

    ``timeout`` applies to each claim from its own create. When some fail
    and ``raise_on_error`` (the default), the Ready ones are deleted again
    (with ``delete_on_exit``) and :class:`~sandbox_client.BatchError` is
    raised, even when some of those deletes fail (they are noted on it);
    otherwise the batch lists the failures in ``errors``.
    """
    if n < 0 or concurrency < 1:
        raise ValueError("n must be >= 0 and concurrency >= 1")
    owns = api_client is None
    api = ClaimsApi(api_client if api_client is not None else connect(kubeconfig, context, concurrency + 2))
    body = claim_body(template, generate_name=generate_name, warm_pool=warm_pool, labels=labels)
    lock = threading.Lock()
    claims: List[SandboxClaim] = []
    failures: List[errors.SandboxError] = []

    def one(_: int) -> None:
        try:
            info = _create_ready(api, namespace, body, timeout, delete_on_exit)
            claim = SandboxClaim(info, api, delete_on_exit=delete_on_exit)
            with lock:
                claims.append(claim)
        except errors.SandboxError as e:
            with lock:
                failures.append(e)

    batch = ClaimBatch(claims, failures, api, concurrency, delete_on_exit, owns)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        try:
            list(pool.map(one, range(n)))
        except BaseException as failure:
            # Not a claim's typed error (Ctrl-C, a bug): start no more claims,
            # let the running ones end, and delete the Ready ones too.
            pool.shutdown(cancel_futures=True)
            batch._end_after(failure)
            raise
    if failures and raise_on_error:
        error = errors.BatchError(failures, claims)
        batch._end_after(error)
        raise error
    return batch
