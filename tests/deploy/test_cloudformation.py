"""deploy/cloudformation.yaml: cfn-lint clean, no secret in plain function configuration,
and one least-privilege role per function."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "cloudformation.yaml"
FUNCTIONS = {
    "WebSocketFunction": "streaming.lambda_handlers.websocket",
    "WorkerFunction": "streaming.lambda_handlers.stream",
    "SweepFunction": "streaming.lambda_handlers.sweep",
}
SECRETS = ("STREAMER_JWT_SECRET", "DATABASE_URL", "DJANGO_SECRET_KEY")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return cfn_yaml.load(str(TEMPLATE))


def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


def role_of(template: dict[str, Any], function: str) -> str:
    return resources(template)[function]["Properties"]["Role"]["Fn::GetAtt"][0]


def statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """Every statement the role gets: its inline policies and attached managed ones."""
    props = resources(template)[role]["Properties"]
    docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
    for arn in props.get("ManagedPolicyArns", []):
        if isinstance(arn, dict) and "Ref" in arn:
            docs.append(resources(template)[arn["Ref"]]["Properties"]["PolicyDocument"])
    found = []
    for doc in docs:
        for statement in doc["Statement"]:
            if "Fn::If" in statement:  # [condition, when true, when false]
                found.extend(s for s in statement["Fn::If"][1:] if "Effect" in s)
            else:
                found.append(statement)
    return found


def actions(template: dict[str, Any], role: str) -> set[str]:
    found: set[str] = set()
    for statement in statements(template, role):
        action = statement["Action"]
        found.update([action] if isinstance(action, str) else action)
    return found


def resource_text(template: dict[str, Any], role: str) -> str:
    return json.dumps([s["Resource"] for s in statements(template, role)], default=str)


def test_cfn_lint_is_clean() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), str(TEMPLATE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_no_secret_value_in_function_configuration(template, function: str) -> None:
    """Secrets reach a function only as <NAME>_SECRET_ARN (read at cold start); no
    NoEcho parameter is copied into an environment variable."""
    variables = resources(template)[function]["Properties"]["Environment"]["Variables"]
    assert not set(SECRETS) & set(variables)
    no_echo = {name for name, p in template["Parameters"].items() if str(p.get("NoEcho")) == "True"}
    assert not any(json.dumps(v).count(f'"{name}"') for v in variables.values() for name in no_echo)
    assert resources(template)[function]["Properties"]["Handler"] == FUNCTIONS[function]
    assert "DATABASE_URL_SECRET_ARN" in variables and "DJANGO_SECRET_KEY_SECRET_ARN" in variables
    assert ("STREAMER_JWT_SECRET_SECRET_ARN" in variables) == (function == "WebSocketFunction")


def test_each_function_has_its_own_role(template) -> None:
    roles = {role_of(template, f) for f in FUNCTIONS}
    assert len(roles) == len(FUNCTIONS)
    assert "FunctionRole" not in resources(template)


@pytest.mark.parametrize(
    ("function", "stream", "jwt", "creates_requests"),
    [
        ("WebSocketFunction", False, True, True),
        ("WorkerFunction", True, False, False),
        ("SweepFunction", False, False, False),
    ],
)
def test_roles_are_least_privilege(template, function, stream, jwt, creates_requests) -> None:
    role = role_of(template, function)
    granted = actions(template, role)
    text = resource_text(template, role)
    assert ("dynamodb:GetRecords" in granted) == stream
    assert ("JwtSecretArn" in text) == jwt
    creates = any(
        "dynamodb:PutItem" in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
        and "RequestsTable" in json.dumps(st["Resource"], default=str)
        for st in statements(template, role)
    )
    assert creates == creates_requests
    assert "execute-api:ManageConnections" in granted  # every function delivers frames
    # Nothing broad: no wildcard action or resource, no "every index", no table it
    # does not use (the worker heartbeats table is only for process_requests).
    assert not any(a.endswith("*") for a in granted)
    assert '"*"' not in text and "/index/*" not in text and "WorkersTable" not in text
    for dangerous in ("dynamodb:Scan", "dynamodb:DeleteTable", "dynamodb:CreateTable"):
        assert dangerous not in granted


def test_management_api_is_limited_to_this_stage(template) -> None:
    for function in FUNCTIONS:
        for statement in statements(template, role_of(template, function)):
            if statement["Action"] == "execute-api:ManageConnections":
                for resource in statement["Resource"]:
                    assert "${WebSocketApi}/${Stage}/" in resource["Fn::Sub"]
