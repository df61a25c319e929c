"""Ops commands and the sockets they can reach (``connections/layers.py``,
``connections/publishing.py``, ``send_message``, ``create_tenant --disable``).

A socket "of another process" is a channel issued by another
:class:`ProcessChannelLayer`, exactly what a server process hands out when a command
runs without Redis; the test process's own layer (the settings' default) plays the
server that holds the sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, channel_layers, get_channel_layer
from django.core.management import call_command
from django.core.management.base import CommandError

from connections.layers import ChannelNotInProcess, ProcessChannelLayer, reaches
from connections.manager import manager
from connections.models import Tenant
from connections.publishing import out_of_reach
from storage import base
from storage.connection import ConnectionInfo
from storage.localserver import free_port
from tests.support.admin import new_channel, nothing_sent, receive
from tests.support.hub import hold

pytestmark = pytest.mark.django_db(transaction=True)

Connect = Callable[..., ConnectionInfo]


def foreign_channel() -> str:
    """A socket channel handed out by another process's layer."""
    return async_to_sync(ProcessChannelLayer().new_channel)()


CHANNELS = {"own": new_channel, "other process": foreign_channel, "named": lambda: "streamer.x"}


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_default_layer_without_redis_is_the_process_layer() -> None:
    assert isinstance(get_channel_layer(), ProcessChannelLayer)


@pytest.mark.parametrize(
    ("kind", "held"), [("own", True), ("other process", False), ("named", True)]
)
def test_layer_holds_its_own_sockets_and_named_channels(kind: str, held: bool) -> None:
    channel = CHANNELS[kind]()
    assert get_channel_layer().holds(channel) is held
    assert reaches(channel) is held


@pytest.mark.parametrize(("kind", "delivered"), [("own", True), ("other process", False)])
def test_a_frame_for_another_process_is_reported_failed_not_delivered(
    connect: Connect, kind: str, delivered: bool
) -> None:
    info = connect("c1", address=CHANNELS[kind]())
    assert async_to_sync(manager.send)("c1", {"type": "message", "text": "hi"}) is delivered
    if delivered:
        assert receive(info.address)["type"] == "streamer.frame"
    else:
        assert nothing_sent(info.address)
        with pytest.raises(ChannelNotInProcess):
            async_to_sync(get_channel_layer().send)(info.address, {"type": "x"})


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        ({}, False),  # no layer at all reaches nothing
        ({"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}, True),  # trusted
    ],
)
def test_reaches_with_other_layers(settings, layers: dict, expected: bool) -> None:
    settings.CHANNEL_LAYERS = layers
    channel_layers.backends = {}
    try:
        if layers:
            assert isinstance(get_channel_layer(), InMemoryChannelLayer)
        assert reaches(foreign_channel()) is expected
    finally:
        channel_layers.backends = {}


def test_api_gateway_sockets_are_always_in_reach(connect: Connect) -> None:
    infos = [
        connect("gw", transport="apigw", address="gw-connection-id"),
        connect("own"),
        connect("far", address=foreign_channel()),
    ]
    assert [i.connection_id for i in out_of_reach(infos)] == ["far"]


# --- send_message ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "sockets", "output"),
    [
        (["--user", "acme:alice"], ["own", "own"], "delivered=2 gone=0 failed=0"),
        (["--tenant", "acme"], ["own"], "delivered=1 gone=0 failed=0"),
        (["--connection", "c0"], ["own"], "delivered=1 gone=0 failed=0"),
        (["--user", "acme:alice"], ["own", "other process"], "1 connection(s)"),
        (["--tenant", "acme"], ["other process"], "1 connection(s)"),
        (["--connection", "c0"], ["other process"], "1 connection(s)"),
    ],
)
def test_send_message_delivers_or_refuses_before_sending(
    tenant: Tenant, connect: Connect, args: list[str], sockets: list[str], output: str
) -> None:
    infos = [connect(f"c{i}", address=CHANNELS[kind]()) for i, kind in enumerate(sockets)]
    for info, kind in zip(infos, sockets, strict=True):
        if kind == "own":  # the server (this process) holds it: in its hub
            async_to_sync(hold)(info)
    command = ["send_message", *args, "--json", '{"text": "hi"}']
    if "other process" not in sockets:
        out, _ = run(*command)
        assert out.strip() == output
        assert all(receive(i.address)["type"] == "streamer.frame" for i in infos)
        return
    with pytest.raises(CommandError) as refused:
        run(*command)
    message = str(refused.value)
    assert message.startswith(f"nothing was sent: {output} are held by a server process")
    assert "REDIS_URL" in message
    assert all(nothing_sent(i.address) for i in infos)  # not even the reachable one


# --- create_tenant --disable ----------------------------------------------------------


@pytest.mark.parametrize("sockets", [[], ["own"], ["own", "own"]])
def test_disable_closes_the_tenants_sockets_with_4403(
    tenant: Tenant, connect: Connect, sockets: list[str]
) -> None:
    infos = [connect(f"c{i}", address=new_channel()) for i in range(len(sockets))]
    bystander = connect("b1", tenant_id="other", address=new_channel())
    out, err = run("create_tenant", "acme", "--disable")
    assert "tenant acme updated" in out and "disabled" in out
    assert f"closed {len(infos)} live connection(s) with 4403" in out
    assert err == ""
    for info in infos:
        message = receive(info.address)
        assert (message["type"], message["code"]) == ("streamer.close", 4403)
    assert nothing_sent(bystander.address)
    assert Tenant.objects.get(pk="acme").active is False


def test_disable_refuses_and_changes_nothing_when_sockets_are_out_of_reach(
    tenant: Tenant, connect: Connect
) -> None:
    own = connect("c1", address=new_channel())
    connect("c2", address=foreign_channel())
    with pytest.raises(CommandError, match=r"tenant acme not changed: 1 connection\(s\)"):
        run("create_tenant", "acme", "--disable")
    assert Tenant.objects.get(pk="acme").active is True
    assert nothing_sent(own.address)


def test_disable_with_storage_down_disables_and_says_the_sockets_stay(tenant: Tenant) -> None:
    base.configure(base.StoreConfig(endpoint_url=f"http://127.0.0.1:{free_port()}"))
    out, err = run("create_tenant", "acme", "--disable")
    assert "disabled" in out and "closed" not in out
    assert "could not be listed (storage unavailable)" in err
    assert Tenant.objects.get(pk="acme").active is False


def test_disable_reports_sockets_whose_transport_failed(
    tenant: Tenant, connect: Connect, settings
) -> None:
    settings.STREAMER_TRANSPORTS = {"channels": settings.STREAMER_TRANSPORTS["channels"]}
    connect("c1", address=new_channel())
    connect("c2", transport="apigw", address="gw-1")  # a transport this process lacks
    out, err = run("create_tenant", "acme", "--disable")
    assert "disabled" in out and "closed" not in out
    assert "closed 1 live connection(s) with 4403; 1 could not be reached" in err
