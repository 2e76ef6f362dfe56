"""pytest fixtures: the real local control plane and the real operator.

The control plane comes from ``SANDBOX_KUBECONFIG`` or from
``tests/controlplane/cluster.sh up`` (as the Rust integration tests do); a
test that cannot get one FAILS with the reason, nothing is skipped. One
namespace per session holds the README's AIO template with its warm pool of
3 (``examples/``), a template with a 1 s simulated cold start and one with a
60 s start; the operator binary runs for that namespace only, with its
webhook registered by URL on 127.0.0.1, and is stopped afterwards.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

REPO = Path(__file__).resolve().parents[3]
CLUSTER = REPO / "tests" / "controlplane" / "cluster.sh"
GROUP, VERSION = "extensions.agents.x-k8s.io", "v1alpha1"

#: Simulated cold start (KWOK delay annotation) of the ``delayed`` template.
COLD_START_MS = 1000
#: Start delay of the ``slow`` template: far longer than any test waits.
SLOW_START_MS = 60000


def template_yaml(name: str, delay_ms: int) -> str:
    return f"""
apiVersion: {GROUP}/{VERSION}
kind: SandboxTemplate
metadata:
  name: {name}
spec:
  podTemplate:
    metadata:
      annotations:
        sandbox.test/start-delay-ms: "{delay_ms}"
    spec:
      containers:
        - name: agent
          image: busybox
          ports:
            - containerPort: 8080
"""


def run(args: list[str], stdin: str | None = None, timeout: float = 120) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    """The admin kubeconfig of the local control plane; KUBECONFIG and PATH
    (kubectl) are set for the whole session."""
    path = os.environ.get("SANDBOX_KUBECONFIG")
    if not path:
        out = run(["bash", str(CLUSTER), "up"], timeout=1800).strip().splitlines()
        if not out:
            pytest.fail(f"{CLUSTER} up printed no kubeconfig path")
        path = out[-1].strip()
    for line in run(["bash", str(CLUSTER), "env"]).splitlines():
        if line.startswith("export PATH="):
            tools = line.removeprefix("export PATH=").split(":")[0].strip("'\"")
            os.environ["PATH"] = f"{tools}{os.pathsep}{os.environ['PATH']}"
    os.environ["KUBECONFIG"] = path
    return path


@pytest.fixture(scope="session")
def operator_binary() -> Path:
    path = Path(os.environ.get("SANDBOX_OPERATOR_BIN", REPO / "target" / "debug" / "sandbox-operator"))
    if not path.exists():
        pytest.fail(f"operator binary {path} missing: run `cargo build --bin sandbox-operator` (make test-python does)")
    return path


@pytest.fixture(scope="session")
def custom(kubeconfig: str) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(k8s_config.new_client_from_config(config_file=kubeconfig))


def wait_until(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def namespace(kubeconfig: str, operator_binary: Path, custom: k8s.CustomObjectsApi) -> Iterator[str]:
    """A fresh namespace with templates, a warm pool of 3 Ready and the operator running."""
    crds = run([str(operator_binary), "crd"])
    run(["kubectl", "apply", "--server-side", "--force-conflicts", "-f", "-"], stdin=crds)
    run(["kubectl", "wait", "--for=condition=Established", "--timeout=60s", "-f", "-"], stdin=crds)
    name = f"py-{secrets.token_hex(3)}"
    run(["kubectl", "create", "namespace", name])
    wait_until("the default ServiceAccount", lambda: _has_default_sa(name), 30)
    operator = start_operator(operator_binary, name, kubeconfig)
    try:
        run(["kubectl", "-n", name, "apply", "-f", "-"], stdin=template_yaml("delayed", COLD_START_MS))
        run(["kubectl", "-n", name, "apply", "-f", "-"], stdin=template_yaml("slow", SLOW_START_MS))
        # The README's example objects, unchanged: template `aio`, pool `aio-pool` of 3.
        run(["kubectl", "-n", name, "apply", "-f", str(REPO / "examples/template.yaml")])
        run(["kubectl", "-n", name, "apply", "-f", str(REPO / "examples/warmpool.yaml")])
        wait_until("3 Ready idle Pods in aio-pool", lambda: pool_ready(custom, name) >= 3, 60)
        yield name
    finally:
        stop_operator(operator)
        lift_policy_holds(name)
        subprocess.run(["kubectl", "delete", "namespace", name, "--wait=false"], capture_output=True)
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            subprocess.run(
                ["kubectl", "delete", "--ignore-not-found", kind, f"sandbox-operator-{name}"], capture_output=True
            )


def lift_policy_holds(namespace: str) -> None:
    """Removes the finalizers of the operator's NetworkPolicies in ``namespace``.

    A cold claim's policy holds until its Pod is gone, which only the operator
    sees; once it is stopped the namespace would stay terminating.
    """
    held = subprocess.run(
        [
            "kubectl",
            "-n",
            namespace,
            "get",
            "networkpolicies",
            "-l",
            "app.kubernetes.io/managed-by=sandbox-operator",
            "-o",
            'jsonpath={range .items[?(@.metadata.finalizers)]}{.metadata.name}{"\\n"}{end}',
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
    for policy in held:
        subprocess.run(
            [
                "kubectl",
                "-n",
                namespace,
                "patch",
                "networkpolicy",
                policy,
                "--type=json",
                "-p",
                '[{"op":"remove","path":"/metadata/finalizers"}]',
            ],
            capture_output=True,
        )


def _has_default_sa(namespace: str) -> bool:
    done = subprocess.run(["kubectl", "-n", namespace, "get", "serviceaccount", "default"], capture_output=True)
    return done.returncode == 0


def pool_ready(custom: k8s.CustomObjectsApi, namespace: str) -> int:
    pool = cast(
        dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "sandboxwarmpools", "aio-pool")
    )
    return int((pool.get("status") or {}).get("readyReplicas") or 0)


def start_operator(binary: Path, namespace: str, kubeconfig: str) -> subprocess.Popen[bytes]:
    """``sandbox-operator run`` for one namespace, with the flags of the Rust
    integration harness (tests/integration/common.rs); waits for /readyz."""
    metrics, webhook = free_port(), free_port()
    logs = REPO / "target" / "test-logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = open(logs / f"{namespace}-operator.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [
            str(binary), "run", "--leader-elect=false", "--namespace", namespace,
            "--metrics-addr", f"127.0.0.1:{metrics}", "--operator-namespace", namespace,
            "--webhook-addr", f"127.0.0.1:{webhook}", "--register-webhook-url", f"https://127.0.0.1:{webhook}",
            "--webhook-config-name", f"sandbox-operator-{namespace}",
        ],
        env={**os.environ, "KUBECONFIG": kubeconfig, "RUST_LOG": "info,kube_runtime=warn,kube_client=warn"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the operator exited with {process.returncode}; log: {logs / f'{namespace}-operator.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/readyz", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    wait_until("the operator's /readyz", ready, 60)
    return process


def stop_operator(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (it unregisters its webhook), SIGKILL after 15 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def claim_exists(custom: k8s.CustomObjectsApi, namespace: str, name: str) -> bool:
    """Whether the claim is still there (and not being deleted)."""
    try:
        obj = cast(
            dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "sandboxclaims", name)
        )
    except k8s.exceptions.ApiException as e:
        if e.status == 404:
            return False
        raise
    return not (obj.get("metadata") or {}).get("deletionTimestamp")


def list_claims(custom: k8s.CustomObjectsApi, namespace: str, selector: str) -> list[str]:
    items = cast(
        dict[str, Any],
        custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "sandboxclaims", label_selector=selector),
    )
    return [i["metadata"]["name"] for i in items["items"]]
