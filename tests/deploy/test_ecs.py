"""deploy/ecs/task-definition.json against the fields ECS requires of a Fargate task
(RegisterTaskDefinition's required and constrained parameters, as AWS documents them: no
schema of the API is available offline), and the IAM policy against the documented actions."""

from __future__ import annotations

import json
import re
from string import Template
from typing import Any

from .files import DEPLOY, ENVOY_IMAGE, ROOT, dockerfile_stages, exec_form

# Fargate's task sizes: CPU units -> allowed memory (MiB).
FARGATE_SIZES: dict[str, set[int]] = {
    "256": {512, 1024, 2048},
    "512": set(range(1024, 4097, 1024)),
    "1024": set(range(2048, 8193, 1024)),
    "2048": set(range(4096, 16385, 1024)),
    "4096": set(range(8192, 30721, 1024)),
}
SAMPLE = {"AWS_ACCOUNT_ID": "123456789012", "AWS_REGION": "eu-west-1"}
SECRET_ARN = re.compile(
    r"^arn:aws:secretsmanager:[a-z0-9-]+:\d{12}:secret:[\w/+=.@-]+(:[\w-]*:[\w-]*:[\w-]*)?$"
)


def task() -> dict[str, Any]:
    """The task definition as `envsubst` fills it in (docs/deployment.md)."""
    text = (DEPLOY / "ecs" / "task-definition.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(Template(text).substitute(SAMPLE))
    return loaded


def containers() -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in task()["containerDefinitions"]}


def test_the_task_has_what_fargate_requires() -> None:
    definition = task()
    assert definition["family"]
    assert definition["requiresCompatibilities"] == ["FARGATE"]
    assert definition["networkMode"] == "awsvpc"
    assert int(definition["memory"]) in FARGATE_SIZES[definition["cpu"]]
    assert definition["executionRoleArn"].startswith("arn:aws:iam::")  # pulls, secrets, logs
    assert sum(c.get("cpu", 0) for c in containers().values()) <= int(definition["cpu"])
    assert sum(c["memory"] for c in containers().values()) <= int(definition["memory"])
    for name, c in containers().items():
        assert c["name"], name
        assert ":" in c["image"], name
        assert not c["image"].endswith(":latest"), name
        for mapping in c.get("portMappings", []):
            assert mapping.get("hostPort", mapping["containerPort"]) == mapping["containerPort"]
        assert c.get("stopTimeout", 30) <= 120, name  # Fargate's ceiling
        logs = c["logConfiguration"]
        assert logs["logDriver"] == "awslogs", name
        # awslogs-stream-prefix is required on Fargate.
        assert {"awslogs-group", "awslogs-region", "awslogs-stream-prefix"} <= set(logs["options"])


def test_envoy_starts_after_a_healthy_gateway() -> None:
    envoy = containers()["envoy"]
    assert envoy["image"] == ENVOY_IMAGE
    for dependency in envoy["dependsOn"]:
        assert dependency["condition"] in {"START", "COMPLETE", "SUCCESS", "HEALTHY"}
        target = containers()[dependency["containerName"]]
        if dependency["condition"] == "HEALTHY":
            assert "healthCheck" in target
    assert envoy["dependsOn"] == [{"containerName": "gateway", "condition": "HEALTHY"}]
    # Its configuration is the one the gateway's image rendered at build time.
    assert envoy["volumesFrom"] == [{"sourceContainer": "gateway", "readOnly": True}]
    assert envoy["command"][:3] == ["envoy", "-c", "/etc/envoy/envoy.yaml"]


def test_the_health_check_is_the_images_script_in_liveness_mode() -> None:
    check = containers()["gateway"]["healthCheck"]
    assert check["command"][0] in {"CMD", "CMD-SHELL"}
    assert 5 <= check["interval"] <= 300
    assert 2 <= check["timeout"] <= 60
    assert 1 <= check["retries"] <= 10
    assert 0 <= check["startPeriod"] <= 300
    _, stages = dockerfile_stages()
    image_check = exec_form(stages[-1].one("HEALTHCHECK").split(" CMD ", 1)[1])
    # The same script; --alive: ECS replaces an unhealthy task, and a database outage
    # must not replace them all (docs/deployment.md).
    assert check["command"][1:] == [*image_check, "--alive"]


def test_secrets_come_from_secrets_manager_never_from_values() -> None:
    gateway = containers()["gateway"]
    for secret in gateway["secrets"]:
        assert secret["name"], secret
        assert SECRET_ARN.match(secret["valueFrom"]), secret
    names = {variable["name"] for variable in gateway["environment"]}
    assert not {n for n in names if "PASSWORD" in n or n == "AUTH_POLICY"}
    assert {
        "RDS_PASSWORD",
        "DB_READONLY_PASSWORD",
        "DB_WATCHDOG_PASSWORD",
        "DB_STATE_PASSWORD",
    } <= {s["name"] for s in gateway["secrets"]}


def test_the_stop_timeout_covers_the_drain() -> None:
    gateway = containers()["gateway"]
    env = {v["name"]: v["value"] for v in gateway["environment"]}
    assert gateway["stopTimeout"] > float(env["DRAIN_S"]) + float(env["GRACE_PERIOD_S"])


def test_the_iam_policy_grants_what_the_docs_list_and_nothing_else() -> None:
    text = (DEPLOY / "aws" / "gateway-policy.json").read_text(encoding="utf-8")
    policy = json.loads(Template(text).substitute(SAMPLE))
    actions = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert actions == {
        "lambda:InvokeFunction",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "secretsmanager:GetSecretValue",
    }
    documented = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for action in actions:
        assert f"`{action}`" in documented
    for statement in policy["Statement"]:
        assert statement["Resource"] != "*"
