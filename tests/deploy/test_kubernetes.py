"""deploy/kubernetes: every manifest valid against Kubernetes' own schemas (offline, from the
kubernetes-validate wheel), and the pod as restricted and as well probed as the docs say."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from .files import DEPLOY, ENVOY_IMAGE, env_file, yaml_documents

K8S = DEPLOY / "kubernetes"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
# The oldest version the manifests need (the preStop `sleep` action is on by default from
# 1.30) and the newest the wheel has schemas for.
VERSIONS = ["1.30", kubernetes_validate.latest_version()]


def resources() -> dict[str, dict[str, Any]]:
    """Every resource by kind and name: "ConfigMap/datamorph-gateway-env"."""
    return {
        f"{doc['kind']}/{doc['metadata']['name']}": doc  # type: ignore[index]
        for path in MANIFESTS
        for doc in yaml_documents(path)
    }


def resource(kind: str, name: str = "datamorph-gateway") -> dict[str, Any]:
    return resources()[f"{kind}/{name}"]


def gateway_env() -> dict[str, str]:
    data: dict[str, str] = resource("ConfigMap", "datamorph-gateway-env")["data"]
    return data


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = resource("Deployment")["spec"]["template"]["spec"]
    return spec


def container(name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in pod()["containers"] if c["name"] == name)
    return found


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_validates_against_the_kubernetes_schema(path: Path, version: str) -> None:
    for doc in yaml_documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)
    assert kustomization["images"][0]["name"] == container("gateway")["image"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_builds_the_kustomization() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    built = [doc for doc in yaml.safe_load_all(out) if doc]
    assert {doc["metadata"].get("namespace") for doc in built if doc["kind"] != "Namespace"} == {
        "datamorph"
    }
    for doc in built:
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_the_pod_runs_restricted() -> None:
    spec = pod()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    # The auth policy's Secret volume (mode 0440) is readable by the gateway's group.
    assert (
        spec["securityContext"]["fsGroup"] == container("gateway")["securityContext"]["runAsGroup"]
    )
    for c in spec["containers"]:
        security = c["securityContext"]
        assert security["runAsUser"] > 0, c["name"]
        assert security["allowPrivilegeEscalation"] is False, c["name"]
        assert security["readOnlyRootFilesystem"] is True, c["name"]
        assert security["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert c["resources"]["requests"], c["name"]
        assert c["resources"]["limits"], c["name"]
    writable = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    mounted = {m["mountPath"]: m["name"] for m in container("gateway")["volumeMounts"]}
    assert mounted["/tmp"] in writable  # noqa: S108 (the container's /tmp, an emptyDir)  # noqa: S108 (the container's /tmp, an emptyDir)
    envoy_mounts = {m["mountPath"]: m["name"] for m in container("envoy")["volumeMounts"]}
    assert envoy_mounts["/run/envoy"] in writable  # the admin socket's directory


def test_no_secret_value_is_in_the_manifests() -> None:
    kinds = {name.partition("/")[0] for name in resources()}
    assert "Secret" not in kinds, "Secrets are referenced, never committed"
    for key in gateway_env():
        assert "PASSWORD" not in key, key
    for c in pod()["containers"]:
        for variable in c.get("env", []):
            if any(word in variable["name"] for word in ("PASSWORD", "SECRET", "KEY")):
                assert "value" not in variable, variable["name"]
                assert "secretKeyRef" in variable["valueFrom"], variable["name"]


def test_probes_follow_the_documented_reasoning() -> None:
    gateway = container("gateway")
    # Readiness: grpc.health.v1, NOT_SERVING while the database is down or the process drains.
    assert gateway["readinessProbe"]["grpc"]["port"] == 50051
    # Liveness: TCP, so a database outage never restarts the replicas (docs/operations.md).
    assert gateway["livenessProbe"]["tcpSocket"]["port"] == 50051
    assert "grpc" not in gateway["livenessProbe"]


def test_the_grace_period_covers_the_drain() -> None:
    env = gateway_env()
    drain_and_grace = float(env["DRAIN_S"]) + float(env["GRACE_PERIOD_S"])
    pre_stop = container("envoy")["lifecycle"]["preStop"]["sleep"]["seconds"]
    # Envoy keeps serving while the gateway drains and finishes its calls ...
    assert pre_stop >= drain_and_grace
    # ... and the kubelet waits for both, with room for Envoy's own stop.
    assert pod()["terminationGracePeriodSeconds"] >= pre_stop + 5
    # The gateway gets its SIGTERM at once: it drains by itself, with no preStop.
    assert "lifecycle" not in container("gateway")


def test_the_network_policy_opens_envoy_and_metrics_only() -> None:
    policy = resource("NetworkPolicy")["spec"]
    ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ports == {8080, 9464}
    metrics = next(r for r in policy["ingress"] if r["ports"][0]["port"] == 9464)
    assert metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    annotations = resource("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9464"


def test_the_service_account_carries_the_irsa_role() -> None:
    account = resource("ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    assert pod()["serviceAccountName"] == account["metadata"]["name"]


def test_envoy_is_the_official_image_of_the_tested_version() -> None:
    assert container("envoy")["image"] == ENVOY_IMAGE
    assert container("envoy")["args"][:3] == ["envoy", "-c", "/etc/envoy/envoy.yaml"]


def test_systemd_and_kubernetes_drain_alike() -> None:
    """One drain everywhere: the EC2 environment file sets what the pod's ConfigMap sets."""
    host = env_file(DEPLOY / "systemd" / "gateway.env")
    env = gateway_env()
    assert (host["DRAIN_S"], host["GRACE_PERIOD_S"]) == (env["DRAIN_S"], env["GRACE_PERIOD_S"])
