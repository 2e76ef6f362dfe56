"""The blocking client, on the official ``kubernetes`` package.

Flow of :meth:`SandboxClaim.create`: the client picks the claim's name
(``generateName`` plus five random characters, see
:class:`~sandbox_client._protocol.CreatePlan`); one POST creates the claim;
ONE watch on that claim alone (field selector ``metadata.name``), started
from the resourceVersion the create returned, so no update between the two
calls is missed, reads its status until
:func:`~sandbox_client.status.evaluate` says Ready or failed; leaving the
``with`` block deletes the claim.

Guarantees:

- every API call that fails, a lost connection included, raises a typed
  error (:class:`~sandbox_client.ApiError`, caused by the connection error);
- every call is bounded: the create, GET and watch by the time left (plus
  a second for GET and watch), each DELETE by ``DELETE_TIMEOUT``, every
  connect by ``CONNECT_TIMEOUT``; a client built here has urllib3's own
  retries off (they would resend a GET, DELETE or watch after a read
  timeout); an ``api_client`` passed in is not changed;
- a claim this client may have created is deleted again when ``create``
  fails, the create itself included (no answer, timeout, Ctrl-C), unless
  ``delete_on_exit=False``; never by name alone: with its uid as
  precondition, the uid of the create's answer, else of the claim read
  under the name and carrying this create's token (see
  :meth:`ClaimsApi.cleanup`); a claim without that token (someone else's,
  under a caller's ``name``) is left alone, with a note saying so; a
  definite refusal and a name held by someone else delete nothing; when
  the cleanup fails too, the error raised is still the one that ended the
  call, with a note naming the claim left behind;
- 408, 429 and 5xx answers to the create are retried within the deadline
  (Retry-After honoured, else jittered backoff) under the same name; a 409
  after an attempt without a clear answer reads the claim and takes it
  over only when it carries this create's token;
- when ``create_many`` raises, for whatever reason (Ctrl-C twice
  included), it has tried to delete every claim already Ready (unless
  ``delete_on_exit=False``); its workers watch in ``STOP_SLICE`` slices, so
  a stopped worker deletes its own claim within about a second; with
  ``raise_on_error`` the first failure starts no more claims;
- the wait ends within about a second of ``timeout`` (the watch's own
  ``timeoutSeconds`` is whole seconds) and never busy-polls;
- a watch the API server ends early is resumed from the last seen
  resourceVersion, as is one whose connection was reset (up to
  ``WATCH_RESUMES`` times); a ``410 Gone`` is answered by one GET and a new
  watch from there; a claim seen with another uid counts as deleted;
- a client built here is closed when the claim (or batch) is done with it;
  an ``api_client`` passed in is never closed.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Mapping, Optional, Tuple, cast

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
    falling back to the in-cluster service account. urllib3's retries are
    off: a read timeout must end the call, not resend it. A configuration
    that cannot be loaded is an :class:`~sandbox_client.ApiError` naming it."""
    configuration = k8s.Configuration()
    if pool_size:
        configuration.connection_pool_maxsize = pool_size
    configuration.retries = False
    kubeconfig = protocol.kubeconfig_path(kubeconfig)
    try:
        if kubeconfig:
            k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        else:
            k8s_config.load_incluster_config(client_configuration=configuration)
    except (k8s_config.ConfigException, OSError) as e:
        raise protocol.config_failed(e, kubeconfig, context) from e
    return k8s.ApiClient(configuration)


class ClaimsApi:
    """Create / watch / delete SandboxClaims through one ApiClient."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)

    def create(self, plan: protocol.CreatePlan, stop: Optional[threading.Event] = None) -> Tuple[str, str]:
        """POSTs the claim of ``plan`` until it is created (its name and
        resourceVersion), retrying what the plan says; a definite refusal
        raises :class:`~sandbox_client.ClaimRejected`, anything else
        :class:`~sandbox_client.ApiError`."""
        namespace = plan.namespace
        while True:
            plan.sending()
            try:
                bound = protocol.request_timeout(plan.deadline)
                created = self.custom.create_namespaced_custom_object(
                    *protocol.list_args(namespace), plan.body(), _request_timeout=bound
                )
            except ApiException as e:
                step = plan.failed(e)
                if isinstance(step, protocol.ReadBack):
                    try:
                        obj: Optional[Dict[str, Any]] = self.get(namespace, plan.name, plan.deadline)
                    except errors.ClaimDeleted:
                        obj = None
                    adopted = plan.adopt(obj, e)
                    if isinstance(adopted, tuple):
                        return adopted
                    step = adopted
                if isinstance(step, errors.SandboxError):
                    raise step from e
                if isinstance(step, protocol.Retry) and step.delay > 0:
                    if stop is not None:
                        if stop.wait(step.delay):
                            raise protocol.Stopped() from e
                    else:
                        time.sleep(step.delay)
                continue
            except (OSError, urllib3.exceptions.HTTPError) as e:
                raise plan.unanswered(e) from e
            return plan.answered(cast(Dict[str, Any], created))

    def get(self, namespace: str, name: str, deadline: Optional[float] = None) -> Dict[str, Any]:
        """GET the claim (bounded by ``deadline`` plus a second, else by
        ``DELETE_TIMEOUT``)."""
        bound = protocol.request_timeout(deadline, 1.0) if deadline is not None else protocol.delete_timeout()
        try:
            obj = self.custom.get_namespaced_custom_object(*protocol.list_args(namespace), name, _request_timeout=bound)
            return cast(Dict[str, Any], obj)
        except ApiException as e:
            raise protocol.read_failed(e, namespace, name) from e
        except (OSError, urllib3.exceptions.HTTPError) as e:
            raise protocol.read_unreachable(e, namespace, name) from e

    def delete(self, namespace: str, name: str, uid: Optional[str] = None) -> bool:
        """DELETE the claim (its Sandbox, Pod, Service and NetworkPolicy follow
        by garbage collection), only if it still has ``uid`` when given.
        False when it was already gone. Bounded by ``DELETE_TIMEOUT``."""
        options = k8s.V1DeleteOptions(
            propagation_policy="Background", preconditions=k8s.V1Preconditions(uid=uid) if uid else None
        )
        try:
            self.custom.delete_namespaced_custom_object(
                *protocol.list_args(namespace), name, body=options, _request_timeout=protocol.delete_timeout()
            )
            return True
        except ApiException as e:
            error = protocol.delete_failed(e, namespace, name, uid)
            if error is None:
                return False
            raise error from e
        except (OSError, urllib3.exceptions.HTTPError) as e:
            raise protocol.delete_unreachable(e, namespace, name) from e

    def cleanup(self, plan: protocol.CreatePlan) -> Optional[str]:
        """Deletes the claim ``plan`` may have created, never another.

        With the uid of the create's answer: a DELETE with it as
        precondition. Otherwise the claim under the name is read: carrying
        the plan's token, it is deleted with its uid as precondition;
        carrying another (or none), it is someone else's and left alone
        (the note returned says so); absent after a create without a clear
        answer (none, a timeout, Ctrl-C, a 408 or 5xx), it is looked for
        again every ``LATE_CREATE_POLL`` seconds
        for ``LATE_CREATE_WAIT`` seconds, in case that create is written
        late. Each call is bounded by ``DELETE_TIMEOUT``; a failed one
        raises (:class:`~sandbox_client.ApiError`)."""
        namespace, name = plan.namespace, plan.name
        if plan.uid:
            self.delete(namespace, name, plan.uid)
            return None
        until = time.monotonic() + plan.late_wait()
        while True:
            try:
                obj: Optional[Dict[str, Any]] = self.get(namespace, name)
            except errors.ClaimDeleted:
                obj = None
            if obj is not None:
                uid = plan.ours(obj)
                if uid is None:
                    return protocol.not_ours(namespace, name, obj)
                self.delete(namespace, name, uid)
                return None
            left = until - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(protocol.LATE_CREATE_POLL, left))

    def wait_ready(
        self,
        namespace: str,
        name: str,
        resource_version: str,
        started: float,
        timeout: float,
        uid: Optional[str] = None,
        stop: Optional[threading.Event] = None,
    ) -> SandboxInfo:
        """Watches the one claim from ``resource_version`` until it is Ready
        (returns its facts), failed (raises) or ``timeout`` seconds after
        ``started`` (a ``time.monotonic()`` reading) have passed. With
        ``stop``, watches in ``STOP_SLICE`` slices and raises
        :class:`~sandbox_client._protocol.Stopped` once it is set."""
        deadline = started + timeout
        last: Optional[Waiting] = None
        version = resource_version
        resets = 0
        while True:
            if stop is not None and stop.is_set():
                raise protocol.Stopped()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise protocol.timed_out(namespace, name, timeout, last)
            watch_for = min(remaining, protocol.STOP_SLICE) if stop is not None else remaining
            events = k8s_watch.Watch().stream(
                self.custom.list_namespaced_custom_object,
                *protocol.list_args(namespace),
                **protocol.watch_kwargs(name, version, watch_for),
                _request_timeout=protocol.request_timeout(time.monotonic() + watch_for, 1.0),
            )
            try:
                for event in events:
                    version, state = protocol.observe(namespace, name, event, started, uid)
                    if isinstance(state, SandboxInfo):
                        return state
                    last = state
            except ApiException as e:
                error = protocol.watch_failed(e, namespace, name)
                if error is not None:
                    raise error from e
                # Our resourceVersion fell out of the watch window: read the
                # claim once and watch on from there.
                version, state = protocol.read(namespace, name, self.get(namespace, name, deadline), started, uid)
                if isinstance(state, SandboxInfo):
                    return state
                last = state
            except urllib3.exceptions.ProtocolError as e:
                # The connection was reset: resume from the last version seen.
                resets += 1
                if time.monotonic() >= deadline:
                    raise protocol.timed_out(namespace, name, timeout, last) from e
                if resets > protocol.WATCH_RESUMES:
                    raise protocol.watch_unreachable(e, namespace, name) from e
            except (OSError, urllib3.exceptions.HTTPError) as e:
                if time.monotonic() >= deadline:
                    raise protocol.timed_out(namespace, name, timeout, last) from e
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
        when this call fails once the claim may exist (the create without
        an answer included).

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
            info, uid = _create_ready(api, namespace, body, timeout, delete_on_exit)
        except BaseException:
            if owns:
                api.api_client.close()
            raise
        return cls(info, api, delete_on_exit=delete_on_exit, owns_client=owns, uid=uid)

    @classmethod
    def create_many(cls, template: str, n: int, namespace: str = "default", **kwargs: Any) -> "ClaimBatch":
        """``n`` claims at once; see :func:`create_many`."""
        return create_many(template, n, namespace, **kwargs)

    def delete(self) -> None:
        """Deletes the claim now (idempotent; only the claim with our uid)
        and closes a client built for it."""
        if not self._deleted:
            self._api.delete(self.namespace, self.name, self.uid)
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
    api: ClaimsApi,
    namespace: str,
    body: Dict[str, Any],
    timeout: float,
    delete_on_failure: bool,
    stop: Optional[threading.Event] = None,
) -> Tuple[SandboxInfo, Optional[str]]:
    """Create, then wait: the facts and uid of the Ready claim. A claim that
    may exist when this fails (the create included: no answer, Ctrl-C) is
    deleted again when ``delete_on_failure``, only if it is ours
    (:meth:`ClaimsApi.cleanup`)."""
    started = time.monotonic()
    plan = protocol.CreatePlan(body, namespace, started + timeout)
    try:
        name, version = api.create(plan, stop)
        return api.wait_ready(namespace, name, version, started, timeout, plan.uid, stop), plan.uid
    except BaseException as failure:
        if delete_on_failure and plan.may_exist:
            try:
                left_alone = api.cleanup(plan)
                if left_alone:
                    protocol.note(failure, left_alone)
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

    def _end_after(self, failure: BaseException, lock: Optional[threading.Lock] = None) -> None:
        """Ends a batch whose ``create_many`` fails with ``failure``: deletes
        the Ready claims (with ``delete_on_exit``) and closes a client built
        for it. ``failure`` stays the error raised; a claim that cannot be
        deleted is noted on it."""
        try:
            if self.delete_on_exit:
                if lock is not None:
                    with lock:  # no worker adds a claim meanwhile (they see the stop)
                        self.claims = list(self.claims)
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
    after its first failure such a batch starts no more claims
    (``BatchError.not_started`` counts them). Otherwise the batch lists the
    failures in ``errors``. Ctrl-C stops the batch: no claim starts, the
    running ones delete their claim within a ``STOP_SLICE``, the Ready ones
    are deleted, a second Ctrl-C included.
    """
    if n < 0 or concurrency < 1:
        raise ValueError("n must be >= 0 and concurrency >= 1")
    owns = api_client is None
    api = ClaimsApi(api_client if api_client is not None else connect(kubeconfig, context, concurrency + 2))
    body = claim_body(template, generate_name=generate_name, warm_pool=warm_pool, labels=labels)
    lock = threading.Lock()
    claims: List[SandboxClaim] = []
    failures: List[errors.SandboxError] = []
    # Set by Ctrl-C (or any unexpected error): running workers stop at their
    # next watch slice and delete their claim; none starts.
    stop = threading.Event()
    # Set by the first failure when the batch will raise: none starts.
    give_up = threading.Event()

    def one(_: int) -> None:
        if stop.is_set() or give_up.is_set():
            return
        try:
            info, uid = _create_ready(api, namespace, body, timeout, delete_on_exit, stop)
        except protocol.Stopped:
            return
        except errors.SandboxError as e:
            with lock:
                failures.append(e)
            if raise_on_error:
                give_up.set()
            return
        claim = SandboxClaim(info, api, delete_on_exit=delete_on_exit, uid=uid)
        with lock:
            stopped = stop.is_set()
            if not stopped:
                claims.append(claim)
        if stopped and delete_on_exit:
            # Ready after the batch was stopped: nobody else will delete it.
            try:
                claim.delete()
            except errors.SandboxError:
                pass

    batch = ClaimBatch(claims, failures, api, concurrency, delete_on_exit, owns)
    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        list(pool.map(one, range(n)))
    except BaseException as failure:
        # Not a claim's typed error (Ctrl-C, a bug): start no more claims,
        # stop the running ones (each deletes its own claim) and delete the
        # Ready ones, even when a second Ctrl-C interrupts the wait.
        stop.set()
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        finally:
            batch._end_after(failure, lock)
        raise
    pool.shutdown(wait=True)
    if failures and raise_on_error:
        error = errors.BatchError(failures, claims, requested=n)
        batch._end_after(error)
        raise error
    return batch
