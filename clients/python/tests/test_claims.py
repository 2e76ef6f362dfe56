"""The blocking client against the real control plane and operator."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
from conftest import COLD_START_MS, claim_exists, list_claims, wait_until
from kubernetes import client as k8s

from sandbox_client import (
    BatchError,
    ClaimRejected,
    ClaimTimeout,
    SandboxClaim,
    TemplateNotFound,
    create_many,
)


def assert_ready_facts(sb: SandboxClaim, namespace: str, launch: str) -> None:
    """What the client contract promises for every Ready claim."""
    assert sb.namespace == namespace
    assert sb.launch_type == launch
    assert sb.sandbox_name == sb.name
    assert sb.pod_name
    assert sb.pod_ips and sb.pod_ip == sb.pod_ips[0]
    assert sb.time_to_ready_seconds is not None and sb.time_to_ready_seconds > 0
    assert sb.client_seconds is not None and sb.client_seconds > 0
    # The operator's clock starts at admission, after the client sent the create.
    assert sb.time_to_ready_seconds <= sb.client_seconds + 0.1
    if sb.service_fqdn is not None:
        assert sb.service_fqdn.endswith(f".{namespace}.svc.cluster.local")


def test_warm_claim_gives_the_stolen_pods_facts_and_exit_deletes_it(
    namespace: str, custom: k8s.CustomObjectsApi
) -> None:
    with SandboxClaim.create(template="aio", namespace=namespace, timeout=30) as sb:
        assert_ready_facts(sb, namespace, "warm")
        # A stolen pool Pod keeps its own name: never the claim's.
        assert sb.pod_name != sb.name
        assert sb.pod_name and sb.pod_name.startswith("aio-pool-")
        assert sb.info.warm_pool == "aio-pool"
        stored = custom.get_namespaced_custom_object(
            "extensions.agents.x-k8s.io", "v1alpha1", namespace, "sandboxclaims", sb.name
        )
        assert cast(dict[str, Any], stored)["status"]["podName"] == sb.pod_name
        print(f"warm: operator {sb.time_to_ready_seconds} s, client {sb.client_seconds} s")
        name = sb.name
    wait_until(f"claim {name} deleted", lambda: not claim_exists(custom, namespace, name), 10)


def test_cold_claim_waits_for_the_pod_start(namespace: str) -> None:
    with SandboxClaim.create(template="delayed", namespace=namespace, warm_pool="none", timeout=30) as sb:
        assert_ready_facts(sb, namespace, "cold")
        assert sb.client_seconds is not None and sb.client_seconds >= COLD_START_MS / 1000 - 0.1
        print(f"cold: operator {sb.time_to_ready_seconds} s, client {sb.client_seconds} s")


def test_missing_template_is_a_typed_error_and_leaves_no_claim(namespace: str, custom: k8s.CustomObjectsApi) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateNotFound) as raised:
        SandboxClaim.create(template="no-such-template", namespace=namespace, timeout=30)
    error = raised.value
    assert time.monotonic() - started < 10, "a missing template must fail at once, not time out"
    assert error.reason == "TemplateNotFound"
    assert error.message and "no-such-template" in error.message
    assert error.claim and error.namespace == namespace
    wait_until("the failed claim deleted", lambda: not claim_exists(custom, namespace, error.claim or ""), 10)


def test_admission_rejection_carries_the_api_servers_message(namespace: str) -> None:
    with pytest.raises(ClaimRejected) as raised:
        SandboxClaim.create(template="Not_A_Name", name="bad-ref", namespace=namespace, timeout=30)
    error = raised.value
    assert 400 <= error.status < 500
    assert error.message and "spec.sandboxTemplateRef.name" in error.message
    assert error.claim is None


def test_timeout_while_cold_names_the_last_condition(namespace: str, custom: k8s.CustomObjectsApi) -> None:
    started = time.monotonic()
    with pytest.raises(ClaimTimeout) as raised:
        SandboxClaim.create(template="slow", namespace=namespace, warm_pool="none", timeout=2)
    elapsed = time.monotonic() - started
    error = raised.value
    assert 2 <= elapsed < 5, elapsed  # whole-second watch timeout, then the delete
    assert error.cold
    assert error.condition is not None and error.condition.status == "False"
    assert error.reason in {"SandboxCreated", "SandboxNotReady"}
    assert "while starting cold" in str(error) and error.reason in str(error)
    wait_until("the timed-out claim deleted", lambda: not claim_exists(custom, namespace, error.claim or ""), 10)


def test_delete_on_exit_false_keeps_the_claim(namespace: str, custom: k8s.CustomObjectsApi) -> None:
    with SandboxClaim.create(template="aio", namespace=namespace, timeout=30, delete_on_exit=False) as sb:
        name = sb.name
    assert claim_exists(custom, namespace, name)
    sb.delete()
    wait_until(f"claim {name} deleted", lambda: not claim_exists(custom, namespace, name), 10)


def test_create_many_serves_every_claim_once_and_cleans_up(namespace: str, custom: k8s.CustomObjectsApi) -> None:
    with create_many("aio", 5, namespace=namespace, concurrency=3, timeout=30, labels={"batch": "sync"}) as batch:
        assert len(batch) == 5 and not batch.errors
        pods = [sb.pod_name for sb in batch]
        assert len(set(pods)) == 5, f"a Pod served two claims: {pods}"
        for sb in batch:
            assert_ready_facts(sb, namespace, sb.launch_type or "")
            assert sb.launch_type in {"warm", "cold"}
        assert len(list_claims(custom, namespace, "batch=sync")) == 5
    wait_until("the batch deleted", lambda: not list_claims(custom, namespace, "batch=sync"), 10)


def test_create_many_reports_failures(namespace: str, custom: k8s.CustomObjectsApi) -> None:
    batch = create_many("no-such-template", 2, namespace=namespace, raise_on_error=False, labels={"batch": "bad"})
    assert len(batch) == 0
    assert [type(e) for e in batch.errors] == [TemplateNotFound, TemplateNotFound]
    with pytest.raises(BatchError) as raised:
        create_many("no-such-template", 2, namespace=namespace, labels={"batch": "bad"})
    assert raised.value.reason == "TemplateNotFound" and len(raised.value.errors) == 2
    wait_until("failed claims deleted", lambda: not list_claims(custom, namespace, "batch=bad"), 10)
