"""Unit tests of the pure claim-status logic (no cluster needed)."""

from __future__ import annotations

import re
from typing import Any, Dict, Optional

import pytest

from sandbox_client import ClaimFailed, ClaimTimeout, TemplateNotFound
from sandbox_client._decide import check
from sandbox_client.errors import BatchError, ClaimRejected
from sandbox_client.status import Condition, Failed, Ready, SandboxInfo, Waiting, claim_body, evaluate


def claim(
    ready: Optional[str] = None, reason: str = "", message: str = "", status: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    obj: Dict[str, Any] = {"metadata": {"name": "c1", "namespace": "agents", "resourceVersion": "7"}}
    if ready is not None or status is not None:
        obj["status"] = dict(status or {})
        if ready is not None:
            obj["status"]["conditions"] = [
                {"type": "Other", "status": "True", "reason": "X", "message": ""},
                {"type": "Ready", "status": ready, "reason": reason, "message": message},
            ]
    return obj


WARM_STATUS = {
    "sandbox": {"name": "c1", "podIPs": ["10.0.0.7"], "service": "c1", "serviceFQDN": "c1.agents.svc.cluster.local"},
    "podName": "pool-abc12",
    "launchType": "warm",
    "warmPool": "pool",
    "readyTime": "2026-11-29T08:00:00Z",
    "timeToReadySeconds": 0.042,
}


def test_ready_claim_yields_every_connection_fact() -> None:
    outcome = evaluate(claim("True", "SandboxReady", status=WARM_STATUS), client_seconds=0.05)
    assert isinstance(outcome, Ready)
    info = outcome.info
    assert info == SandboxInfo(
        claim="c1",
        namespace="agents",
        sandbox_name="c1",
        pod_name="pool-abc12",
        pod_ips=("10.0.0.7",),
        service="c1",
        service_fqdn="c1.agents.svc.cluster.local",
        launch_type="warm",
        warm_pool="pool",
        ready_time="2026-11-29T08:00:00Z",
        time_to_ready_seconds=0.042,
        client_seconds=0.05,
    )
    assert info.pod_ip == "10.0.0.7"
    assert info.to_dict()["pod_ips"] == ["10.0.0.7"]


def test_optional_fields_stay_none_and_are_never_guessed_from_the_name() -> None:
    outcome = evaluate(claim("True", "SandboxReady", status={"podName": "p", "launchType": "cold"}))
    assert isinstance(outcome, Ready)
    assert outcome.info.service_fqdn is None
    assert outcome.info.sandbox_name is None
    assert outcome.info.pod_ips == ()
    assert outcome.info.pod_ip is None
    assert outcome.info.time_to_ready_seconds is None


@pytest.mark.parametrize("reason", ["SandboxCreated", "SandboxNotReady", "QuotaExceeded", "SomeReasonAddedLater"])
def test_not_ready_with_a_passing_or_unknown_reason_keeps_waiting(reason: str) -> None:
    outcome = evaluate(claim("False", reason, "pod pending", status={"launchType": "cold"}))
    assert outcome == Waiting(Condition("False", reason, "pod pending"), "cold")


def test_no_status_yet_is_waiting_without_condition() -> None:
    assert evaluate(claim()) == Waiting(None, None)


@pytest.mark.parametrize("reason", ["TemplateNotFound", "ClaimExpired", "SandboxRejected", "Forbidden", "NameConflict"])
def test_terminal_reasons_fail_at_once(reason: str) -> None:
    outcome = evaluate(claim("False", reason, "why"))
    assert outcome == Failed(Condition("False", reason, "why"))


def test_check_raises_the_most_specific_typed_error() -> None:
    with pytest.raises(TemplateNotFound) as missing:
        check("agents", "c1", claim("False", "TemplateNotFound", "SandboxTemplate x does not exist"), 0.0)
    assert missing.value.reason == "TemplateNotFound"
    assert missing.value.message == "SandboxTemplate x does not exist"
    assert "agents/c1" in str(missing.value)
    with pytest.raises(ClaimFailed) as expired:
        check("agents", "c1", claim("False", "ClaimExpired", "gone"), 0.0)
    assert not isinstance(expired.value, TemplateNotFound)
    assert expired.value.reason == "ClaimExpired"


def test_timeout_says_cold_and_names_the_last_condition() -> None:
    error = ClaimTimeout("c1", "agents", 2.0, Condition("False", "SandboxNotReady", "Pod c1 is Pending"), "cold")
    assert error.cold
    assert error.reason == "SandboxNotReady"
    assert str(error) == (
        "SandboxClaim agents/c1 not Ready after 2s while starting cold: "
        "last condition Ready=False SandboxNotReady: Pod c1 is Pending"
    )
    silent = ClaimTimeout("c1", "agents", 5.0, None, None)
    assert not silent.cold
    assert silent.reason is None
    assert "no status yet" in str(silent)


def test_rejection_and_batch_errors_carry_the_api_answer() -> None:
    rejected = ClaimRejected("agents", 400, "BadRequest", 'spec.sandboxTemplateRef.name: "X" is not a valid name')
    assert rejected.status == 400
    assert "spec.sandboxTemplateRef.name" in str(rejected)
    assert "rejected (403): denied" in str(ClaimRejected("agents", 403, "", "denied"))
    batch = BatchError([rejected], ["a", "b"])
    assert str(batch).startswith("1 of 3 claims failed")
    assert batch.errors == [rejected]


def test_claim_body_is_the_v1alpha1_shape() -> None:
    assert claim_body("aio") == {
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
        "kind": "SandboxClaim",
        "metadata": {"generateName": "aio-"},
        "spec": {"sandboxTemplateRef": {"name": "aio"}},
    }
    body = claim_body("aio", name="mine", warm_pool="none", labels={"team": "a"})
    assert body["metadata"] == {"name": "mine", "labels": {"team": "a"}}
    assert body["spec"]["warmpool"] == "none"


@pytest.mark.parametrize(
    ("template", "prefix"),
    [
        ("aio", "aio-"),
        ("py3.12", "py3-12-"),
        ("3d-render", "c-3d-render-"),
        ("A_b", "a-b-"),
        ("t" * 80, "t" * 57 + "-"),
    ],
)
def test_the_default_generate_name_starts_a_valid_claim_name(template: str, prefix: str) -> None:
    # A claim's name is its Service's: a DNS-1035 label, which the webhook
    # checks; a template's name may hold dots or start with a digit.
    assert claim_body(template)["metadata"]["generateName"] == prefix
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,56}[-])", prefix)
