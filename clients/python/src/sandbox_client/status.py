"""The claim status contract, read without any I/O.

This module owns what the clients take from a ``SandboxClaim``: the body of
the claim they create, the connection facts of a Ready claim
(:class:`SandboxInfo`), and the decision after each watch event
(:func:`evaluate`): Ready, still waiting, or failed for good. Both the sync
and the asyncio client call the same functions, so they cannot disagree.

Guarantees:

- a claim is Ready only when its ``Ready`` condition has status ``True``;
- only the reasons in :data:`TERMINAL_REASONS` end the wait early; any other
  reason (including ones this version does not know) keeps the wait going,
  and a timeout then reports it;
- optional status fields (``service``, ``serviceFQDN``, ``warmPool``, ...)
  are ``None`` when absent, never guessed from the claim's name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

#: API group, version and plural of SandboxClaim.
GROUP = "extensions.agents.x-k8s.io"
VERSION = "v1alpha1"
PLURAL = "sandboxclaims"
KIND = "SandboxClaim"

#: ``Ready=False`` reasons after which the claim will not become Ready by
#: itself: the wait stops at once with a :class:`~sandbox_client.ClaimFailed`.
#: ``QuotaExceeded`` is not one: the operator retries and a quota can free up.
TERMINAL_REASONS = frozenset({"TemplateNotFound", "ClaimExpired", "SandboxRejected", "Forbidden", "NameConflict"})


@dataclass(frozen=True)
class Condition:
    """The claim's ``Ready`` condition as last seen."""

    status: str
    reason: str
    message: str

    def describe(self) -> str:
        """``Ready=False SandboxNotReady: <message>``."""
        text = f"Ready={self.status} {self.reason}"
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True)
class SandboxInfo:
    """How to reach a Ready sandbox, from the claim's status.

    ``time_to_ready_seconds`` is measured by the operator (from the API
    server admitting the claim to Ready); ``client_seconds`` by this client
    (from sending the create to seeing Ready), so it includes both network
    legs.
    """

    claim: str
    namespace: str
    sandbox_name: Optional[str]
    pod_name: Optional[str]
    pod_ips: Tuple[str, ...]
    service: Optional[str]
    service_fqdn: Optional[str]
    launch_type: Optional[str]
    warm_pool: Optional[str]
    ready_time: Optional[str]
    time_to_ready_seconds: Optional[float]
    client_seconds: Optional[float] = field(default=None)

    @property
    def pod_ip(self) -> Optional[str]:
        """The first Pod IP, if any."""
        return self.pod_ips[0] if self.pod_ips else None

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-friendly dict (what the CLI's ``-o json`` prints too)."""
        out = asdict(self)
        out["pod_ips"] = list(self.pod_ips)
        return out


@dataclass(frozen=True)
class Ready:
    """The claim is Ready: here is how to reach it."""

    info: SandboxInfo


@dataclass(frozen=True)
class Waiting:
    """Not Ready yet; ``condition`` is ``None`` before the operator wrote any."""

    condition: Optional[Condition]
    launch_type: Optional[str]


@dataclass(frozen=True)
class Failed:
    """The claim cannot become Ready without someone else acting."""

    condition: Condition


Outcome = Union[Ready, Waiting, Failed]


def default_generate_name(template: str) -> str:
    """``<template>-`` as a claim's ``generateName``: a claim's name is its
    Sandbox's and Service's, so it must be a DNS-1035 label (lowercase
    letters, digits and '-', starting with a letter), while a template's
    name may hold dots or start with a digit. So other characters become
    '-', a prefix not starting with a letter gets ``c-``, and it is cut to
    leave room for the five generated characters (``py3.12`` gives
    ``py3-12-``, ``3d-render`` gives ``c-3d-render-``)."""
    prefix = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in template.lower())
    if not prefix[:1].isalpha():
        prefix = "c-" + prefix
    return prefix[:57].rstrip("-") + "-"


def claim_body(
    template: str,
    *,
    name: Optional[str] = None,
    generate_name: Optional[str] = None,
    warm_pool: Optional[str] = None,
    labels: Optional[Mapping[str, str]] = None,
    annotations: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
    """The SandboxClaim to create. Without ``name``, it carries
    ``generateName`` (``generate_name``, default: the template's name made a
    valid start of a claim name, see :func:`default_generate_name`), which
    the clients turn into a name of their own (the prefix plus five random
    characters, :class:`~sandbox_client._protocol.CreatePlan`) just before
    sending it, so a create whose answer is lost can still be deleted by
    name."""
    metadata: Dict[str, Any] = {}
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = generate_name or default_generate_name(template)
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    spec: Dict[str, Any] = {"sandboxTemplateRef": {"name": template}}
    if warm_pool is not None:
        spec["warmpool"] = warm_pool
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": metadata, "spec": spec}


def ready_condition(claim: Mapping[str, Any]) -> Optional[Condition]:
    """The ``Ready`` condition of a claim object (a dict as the API returns it)."""
    status = claim.get("status") or {}
    for item in status.get("conditions") or []:
        if item.get("type") == "Ready":
            return Condition(
                status=str(item.get("status", "Unknown")),
                reason=str(item.get("reason", "")),
                message=str(item.get("message", "")),
            )
    return None


def sandbox_info(claim: Mapping[str, Any], client_seconds: Optional[float] = None) -> SandboxInfo:
    """The connection facts in a claim's status (absent fields are ``None``)."""
    metadata = claim.get("metadata") or {}
    status = claim.get("status") or {}
    sandbox = status.get("sandbox") or {}
    ttr = status.get("timeToReadySeconds")
    return SandboxInfo(
        claim=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        sandbox_name=sandbox.get("name"),
        pod_name=status.get("podName"),
        pod_ips=tuple(sandbox.get("podIPs") or ()),
        service=sandbox.get("service"),
        service_fqdn=sandbox.get("serviceFQDN"),
        launch_type=status.get("launchType"),
        warm_pool=status.get("warmPool"),
        ready_time=status.get("readyTime"),
        time_to_ready_seconds=float(ttr) if ttr is not None else None,
        client_seconds=client_seconds,
    )


def evaluate(claim: Mapping[str, Any], client_seconds: Optional[float] = None) -> Outcome:
    """What one observed state of the claim means for a client waiting on it."""
    condition = ready_condition(claim)
    if condition is not None and condition.status == "True":
        return Ready(sandbox_info(claim, client_seconds))
    if condition is not None and condition.reason in TERMINAL_REASONS:
        return Failed(condition)
    launch_type = (claim.get("status") or {}).get("launchType")
    return Waiting(condition, launch_type)


def is_cold(waiting: Optional[Waiting]) -> bool:
    """Whether a claim still waiting is being started cold (the operator
    wrote ``launchType: cold``: no warm Pod was free, a new Pod is starting)."""
    return waiting is not None and waiting.launch_type == "cold"


class SandboxFacts:
    """Read-only views of :attr:`info`, shared by the sync and async claims."""

    info: SandboxInfo

    @property
    def name(self) -> str:
        """The claim's name."""
        return self.info.claim

    @property
    def namespace(self) -> str:
        """The claim's namespace."""
        return self.info.namespace

    @property
    def sandbox_name(self) -> Optional[str]:
        """The Sandbox serving the claim (named after the claim)."""
        return self.info.sandbox_name

    @property
    def pod_name(self) -> Optional[str]:
        """The Pod serving the claim (a warm Pod keeps its pool name)."""
        return self.info.pod_name

    @property
    def pod_ips(self) -> Tuple[str, ...]:
        """The Pod's IPs."""
        return self.info.pod_ips

    @property
    def pod_ip(self) -> Optional[str]:
        """The Pod's first IP."""
        return self.info.pod_ip

    @property
    def service_fqdn(self) -> Optional[str]:
        """``<service>.<namespace>.svc.<cluster domain>`` when reported."""
        return self.info.service_fqdn

    @property
    def launch_type(self) -> Optional[str]:
        """``warm`` (a pool Pod was taken over) or ``cold``."""
        return self.info.launch_type

    @property
    def time_to_ready_seconds(self) -> Optional[float]:
        """Claim-to-Ready seconds as measured by the operator."""
        return self.info.time_to_ready_seconds

    @property
    def client_seconds(self) -> Optional[float]:
        """Create-to-Ready seconds as seen by this client."""
        return self.info.client_seconds
