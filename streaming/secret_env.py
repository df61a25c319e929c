"""Secrets named by ARN in the environment, read from AWS at start-up.

A deployment sets ``<NAME>_SECRET_ARN`` (for example ``DJANGO_SECRET_KEY_SECRET_ARN``,
``DATABASE_URL_SECRET_ARN``, ``STREAMER_JWT_SECRET_SECRET_ARN``) instead of ``<NAME>``,
so the value never sits in plain function configuration, where anyone allowed to read
the function (``lambda:GetFunctionConfiguration``) would see it. The ARN is a Secrets
Manager secret (its ``SecretString``) or an SSM ``SecureString`` parameter (decrypted).
:func:`resolve_secret_env` puts each value into the environment under ``<NAME>`` before
the settings read it; each ARN is fetched once per process (a Lambda cold start).

No Django import here: the settings module calls this first.
"""

from __future__ import annotations

import functools
from collections.abc import MutableMapping

SUFFIX = "_SECRET_ARN"


class SecretConfigError(RuntimeError):
    """A ``*_SECRET_ARN`` variable could not be turned into a value (start-up error)."""


@functools.cache
def fetch_secret(arn: str) -> str:
    """The value behind a Secrets Manager or SSM parameter ARN (cached per process)."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[3]:
        raise SecretConfigError("not an ARN")
    service, region = parts[2], parts[3]
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if service == "secretsmanager":
            client = boto3.client("secretsmanager", region_name=region)
            value = client.get_secret_value(SecretId=arn).get("SecretString")
        elif service == "ssm" and parts[5].startswith("parameter/"):
            client = boto3.client("ssm", region_name=region)
            value = client.get_parameter(Name=arn, WithDecryption=True)["Parameter"]["Value"]
        else:
            raise SecretConfigError("not a Secrets Manager secret or SSM parameter ARN")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise SecretConfigError(f"AWS refused to read it ({code})") from None
    except BotoCoreError as exc:
        raise SecretConfigError(f"AWS could not be reached ({type(exc).__name__})") from None
    if not isinstance(value, str) or not value:
        raise SecretConfigError("it has no text value")
    return value


def resolve_secret_env(environ: MutableMapping[str, str]) -> list[str]:
    """Set ``<NAME>`` from every non-empty ``<NAME>_SECRET_ARN`` in ``environ``; the
    names set. Both ``<NAME>`` and its ARN set is an error, as is an unreadable secret:
    a process must not start with a value other than the one its operator chose."""
    resolved = []
    for key, arn in sorted(environ.items()):
        if not key.endswith(SUFFIX) or not arn or key == SUFFIX:
            continue
        name = key[: -len(SUFFIX)]
        if environ.get(name):
            raise SecretConfigError(f"set {name} or {key}, not both")
        try:
            environ[name] = fetch_secret(arn)
        except SecretConfigError as exc:
            raise SecretConfigError(f"{key}={arn}: {exc}") from None
        resolved.append(name)
    return resolved
