"""The Kubernetes manifests in deploy/kubernetes, read as the cluster would: every pod that
runs the gateway probes it, drains it, keeps its root filesystem read-only with a writable
volume wherever it writes, takes the secret from a Secret and the policy from a ConfigMap,
sends the audit trail to stdout and asks for resources; the shared layout scales on CPU and
survives a drain."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from gateway.policy import load_policy
from gateway.serving import DRAIN_SECONDS

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
LAYOUTS = ("shared", "sidecar")


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    return found


def gateway_pods() -> list[dict[str, Any]]:
    """The pod spec of every Deployment that runs the gateway."""
    specs = [d["spec"]["template"]["spec"] for d in of_kind("Deployment")]
    return [s for s in specs if any(c["name"] == "gateway" for c in containers(s))]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def gateway(pod: dict[str, Any]) -> dict[str, Any]:
    (found,) = [c for c in containers(pod) if c["name"] == "gateway"]
    return found


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def volume_at(pod: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume mounted at ``path`` or the deepest mount above it."""
    c = gateway(pod)
    mounts = [m for m in c["volumeMounts"] if PurePosixPath(path).is_relative_to(m["mountPath"])]
    assert mounts, f"nothing is mounted at {path}"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return {**volume, "readOnly": mount.get("readOnly", False)}


def test_both_layouts_run_the_gateway() -> None:
    assert len(gateway_pods()) == 2
    names = {d["metadata"]["name"] for d in of_kind("Deployment")}
    assert names == {"privacy-gateway", "legacy-app"}


@pytest.mark.parametrize("pod", gateway_pods(), ids=LAYOUTS)
def test_probes_and_draining(pod: dict[str, Any]) -> None:
    c = gateway(pod)
    (port,) = c["ports"]
    assert port["containerPort"] == int(env(c)["GATEWAY_PORT"]) == 8080
    assert env(c)["GATEWAY_HOST"] == "0.0.0.0"  # the kubelet probes the pod's address
    for probe, path in (
        ("livenessProbe", "/_gateway/health"),
        ("readinessProbe", "/_gateway/ready"),
    ):
        assert c[probe]["httpGet"]["path"] == path
        assert c[probe]["httpGet"]["port"] in (port["name"], port["containerPort"])
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and int(command[1]) >= 5
    # the endpoint goes, then requests in flight drain, then the trail closes: all in time
    assert pod["terminationGracePeriodSeconds"] > int(command[1]) + DRAIN_SECONDS + 5


@pytest.mark.parametrize("pod", gateway_pods(), ids=LAYOUTS)
def test_read_only_root_with_a_writable_volume_wherever_the_gateway_writes(
    pod: dict[str, Any],
) -> None:
    c = gateway(pod)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    checkpoints = PurePosixPath(env(c)["GATEWAY_CHECKPOINT_FILE"])
    for written in ("/tmp", str(checkpoints.parent)):  # spooled uploads; checkpoints + lock
        volume = volume_at(pod, written)
        assert "emptyDir" in volume and not volume["readOnly"], written


@pytest.mark.parametrize("pod", gateway_pods(), ids=LAYOUTS)
def test_secret_from_a_secret_policy_from_a_configmap(pod: dict[str, Any]) -> None:
    c = gateway(pod)
    values = env(c)
    assert "GATEWAY_SECRET" not in values  # never a literal, never generated per pod
    secret = volume_at(pod, values["GATEWAY_SECRET_FILE"])
    assert secret["secret"]["secretName"] == "privacy-gateway-secret" and secret["readOnly"]
    policy_path = PurePosixPath(values["GATEWAY_POLICY"])
    policy = volume_at(pod, str(policy_path))
    config = one("ConfigMap", policy["configMap"]["name"])
    assert policy_path.name in config["data"]


def test_the_policy_in_the_configmap_is_the_default_policy(tmp_path: Path) -> None:
    text = one("ConfigMap", "privacy-gateway-policy")["data"]["policy.toml"]
    assert text == (ROOT / "policies" / "default.toml").read_text()
    (tmp_path / "policy.toml").write_text(text)
    default = load_policy(ROOT / "policies" / "default.toml")
    assert load_policy(tmp_path / "policy.toml").digest == default.digest


@pytest.mark.parametrize("pod", gateway_pods(), ids=LAYOUTS)
def test_audit_trail_to_stdout_one_worker_named_after_the_pod(pod: dict[str, Any]) -> None:
    values = env(gateway(pod))
    assert "GATEWAY_AUDIT_LOG" not in values  # stdout: the cluster's log pipeline
    assert values["GATEWAY_WORKERS"] == "1"  # scale by pods; one chain per pod
    assert values["GATEWAY_INSTANCE"] == {"fieldRef": {"fieldPath": "metadata.name"}}


@pytest.mark.parametrize("pod", gateway_pods(), ids=LAYOUTS)
def test_resources_are_requested(pod: dict[str, Any]) -> None:
    resources = gateway(pod)["resources"]
    assert resources["requests"]["cpu"] == "500m" and resources["requests"]["memory"]
    assert resources["limits"]["cpu"] == "1" and resources["limits"]["memory"]


def test_the_sidecar_app_talks_to_the_gateway_on_loopback() -> None:
    pod = one("Deployment", "legacy-app")["spec"]["template"]["spec"]
    assert gateway(pod)["restartPolicy"] == "Always"  # a native sidecar: up first, down last
    (app,) = pod["containers"]
    assert "http://127.0.0.1:8080" in env(app).values()


def test_shared_service_autoscaler_and_disruption_budget_select_the_gateway() -> None:
    deployment = one("Deployment", "privacy-gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one("Service", "privacy-gateway")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ("http", 8080)
    hpa = one("HorizontalPodAutoscaler", "privacy-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "privacy-gateway"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and hpa["spec"]["minReplicas"] >= 2
    pdb = one("PodDisruptionBudget", "privacy-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] >= 1


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_builds_with_kustomize(layout: str) -> None:
    p = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / layout)], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(p.stdout)}
    assert {"Deployment", "ConfigMap"} <= kinds
