# Claim a warm AIO sandbox from `make run`, print how to reach it, then let it go.
import os

from sandbox_client import SandboxClaim

namespace = os.environ.get("SANDBOX_NAMESPACE", "default")  # `make run` uses default
with SandboxClaim.create(template="aio", namespace=namespace, timeout=30) as sb:
    print(f"claim {sb.name}: {sb.launch_type} sandbox on Pod {sb.pod_name}, IP {sb.pod_ip}")
    print(f"Ready {sb.time_to_ready_seconds * 1000:.1f} ms after the API server admitted the claim")
    print(f"({sb.client_seconds * 1000:.1f} ms from create to Ready as this client saw it)")
# Leaving the block deleted the claim; its Sandbox, Pod and Service go with it.
