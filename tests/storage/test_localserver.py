"""The embedded DynamoDB server (dynalite) of the local stack and the integration tests."""

from __future__ import annotations

import socket
import struct
import subprocess
from collections.abc import Iterator

import boto3
import pytest

from storage import localserver

pytestmark = pytest.mark.integration


@pytest.fixture
def dynalite() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = localserver.free_port()
    proc = localserver.start_dynalite(port)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        localserver.wait_until_up(endpoint)
        yield endpoint, proc
    finally:
        proc.kill()
        proc.wait()


def list_tables(endpoint: str) -> list[str]:
    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    return list(client.list_tables()["TableNames"])


@pytest.mark.parametrize(
    ("body", "reset"),
    [(b"", False), (b'{"Limit":', False), (b'{"Limit":', True)],
    ids=["headers-only", "half-body-closed", "half-body-reset"],
)
def test_a_client_killed_mid_request_does_not_take_storage_down(
    dynalite: tuple[str, subprocess.Popen[bytes]], body: bytes, reset: bool
) -> None:
    """A worker SIGKILLed in the middle of sending a request aborts it; dynalite used to
    crash on that (and every other process lost storage). It keeps serving now."""
    endpoint, proc = dynalite
    host, port = endpoint.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.0\r\n"
            b"X-Amz-Target: DynamoDB_20120810.ListTables\r\nContent-Length: 1000\r\n\r\n" + body
        )
        if reset:  # close with RST, as a killed process's kernel may
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert list_tables(endpoint) == []
    assert proc.poll() is None
