"""The transport registry (``STREAMER_TRANSPORTS``, like ``CHANNEL_LAYERS``) and the
Channels transport."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer, channel_layers

from connections.manager import ConnectionManager, Target
from connections.transports import (
    InvalidTransportError,
    Transport,
    TransportError,
    get_transport,
    transports,
)
from connections.transports.channels import CLOSE_MESSAGE, FRAME_MESSAGE, ChannelsTransport
from protocol import codec, frames

pytestmark = pytest.mark.usefixtures("channel_layer", "tenant_db")

HERE = "tests.connections.transports.test_channels"


class FakeTransport(Transport):
    built = 0
    lock = threading.Lock()

    def __init__(self, name: str, **config: Any) -> None:
        time.sleep(0.01)  # widen the window of a racy first use
        with FakeTransport.lock:
            FakeTransport.built += 1
        super().__init__(name, **config)
        self.closed = False

    async def send(self, address: str, frame: dict[str, Any], text: str) -> None:
        return None

    async def close(self, address: str, code: int, reason: str = "") -> None:
        return None

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def fake_settings(settings: Any) -> Any:
    settings.STREAMER_TRANSPORTS = {
        "fake": {"BACKEND": f"{HERE}.FakeTransport", "CONFIG": {"region": "eu-west-1"}},
        "bare": {"BACKEND": f"{HERE}.FakeTransport"},
        "broken": {"BACKEND": f"{HERE}.DoesNotExist"},
        "no-backend": {"CONFIG": {}},
    }
    return settings


def test_transports_are_built_from_settings_once(fake_settings: Any) -> None:
    fake = transports["fake"]
    assert isinstance(fake, FakeTransport)
    assert (fake.name, fake.config) == ("fake", {"region": "eu-west-1"})
    assert get_transport("fake") is fake
    bare = get_transport("bare")
    assert (bare.name, bare.config) == ("bare", {})
    assert transports.names() == ["fake", "bare", "broken", "no-backend"]


def test_changing_the_setting_rebuilds_the_transports(fake_settings: Any) -> None:
    first = transports["fake"]
    fake_settings.STREAMER_TRANSPORTS = {
        "fake": {"BACKEND": f"{HERE}.FakeTransport", "CONFIG": {"region": "us-east-1"}}
    }
    second = transports["fake"]
    assert second is not first
    assert second.config == {"region": "us-east-1"}


@pytest.mark.parametrize("name", ["unknown", "broken", "no-backend"])
def test_an_unconfigured_transport_is_an_invalid_transport_error(
    fake_settings: Any, name: str
) -> None:
    with pytest.raises(InvalidTransportError, match=repr(name)):
        get_transport(name)
    with pytest.raises(ValueError):  # it is a ValueError too
        transports[name]


def test_first_use_from_many_threads_builds_one_instance(fake_settings: Any) -> None:
    FakeTransport.built = 0
    seen: list[Transport] = []
    barrier = threading.Barrier(8)

    def use() -> None:
        barrier.wait()
        seen.append(transports["fake"])

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert FakeTransport.built == 1
    assert len({id(t) for t in seen}) == 1


def test_set_installs_an_instance(fake_settings: Any) -> None:
    mine = FakeTransport("custom")
    transports.set("custom", mine)
    assert get_transport("custom") is mine
    transports.set("fake", mine)  # also replaces a configured one
    assert get_transport("fake") is mine


async def test_aclose_closes_every_built_transport(fake_settings: Any) -> None:
    built = [transports["fake"], transports["bare"]]
    await transports.aclose()
    assert all(t.closed for t in built)


async def test_the_base_transport_is_abstract_with_a_no_op_aclose() -> None:
    with pytest.raises(TypeError):
        Transport("x")  # type: ignore[abstract]

    class Minimal(Transport):
        async def send(self, address: str, frame: dict[str, Any], text: str) -> None:
            return None

        async def close(self, address: str, code: int, reason: str = "") -> None:
            return None

    assert await Minimal("m").aclose() is None


def test_the_default_settings_name_the_channels_transport() -> None:
    assert isinstance(get_transport("channels"), ChannelsTransport)


# --- the Channels transport ----------------------------------------------------------------


async def test_channels_transport_sends_frames_and_closes(
    channel_layer: InMemoryChannelLayer,
) -> None:
    transport = ChannelsTransport("channels")
    channel = await channel_layer.new_channel("socket.")
    frame = frames.progress("r-9", 42.5, "working")
    await transport.send(channel, frame, codec.dumps_text(frame))
    await transport.close(channel, 4403, "Tenant disabled")
    assert await channel_layer.receive(channel) == {
        "type": FRAME_MESSAGE,
        "text": codec.dumps_text(frame),
        "frame_type": "progress",
        "request_id": "r-9",
        "percentage": 42.5,
    }
    assert await channel_layer.receive(channel) == {
        "type": CLOSE_MESSAGE,
        "code": 4403,
        "reason": "Tenant disabled",
    }


async def test_channels_transport_uses_its_configured_layer() -> None:
    other = InMemoryChannelLayer()
    channel_layers.set("other", other)
    try:
        transport = ChannelsTransport("channels", layer_alias="other")
        channel = await other.new_channel("socket.")
        await transport.send(channel, {"type": "pong"}, '{"type":"pong"}')
        message = await asyncio.wait_for(other.receive(channel), 5)
        assert message["frame_type"] == "pong" and message["request_id"] is None
    finally:
        channel_layers.backends.pop("other", None)


async def test_a_full_channel_is_a_transport_error() -> None:
    tiny = InMemoryChannelLayer(capacity=1)
    channel_layers.set("default", tiny)  # the channel_layer fixture restores the default
    transport = ChannelsTransport("channels")
    channel = await tiny.new_channel("socket.")
    await transport.send(channel, {"type": "pong"}, "{}")
    with pytest.raises(TransportError, match="channel full"):
        await transport.send(channel, {"type": "pong"}, "{}")
    with pytest.raises(TransportError):
        await transport.close(channel, 1000)


async def test_no_channel_layer_is_a_transport_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "connections.transports.channels.get_channel_layer", lambda alias="default": None
    )
    with pytest.raises(TransportError, match="no channel layer"):
        await ChannelsTransport("channels").send("x", {"type": "pong"}, "{}")


def test_other_settings_do_not_reset_the_transports(fake_settings: Any) -> None:
    fake = transports["fake"]
    fake_settings.STREAMER_IDLE_TIMEOUT_S = 5
    assert transports["fake"] is fake


async def test_an_invalid_channel_name_is_a_transport_error(
    channel_layer: InMemoryChannelLayer,
) -> None:
    with pytest.raises(TransportError, match="invalid channel name"):
        await ChannelsTransport("channels").send("not a channel!", {"type": "pong"}, "{}")


async def test_one_bad_address_does_not_abort_a_fan_out(
    channel_layer: InMemoryChannelLayer,
) -> None:
    good = await channel_layer.new_channel("socket.")
    targets = [Target("bad", "channels", "not a channel!"), Target("good", "channels", good)]
    report = await ConnectionManager().broadcast(targets, {"type": "pong"})
    assert (report.delivered, report.failed) == (1, ["bad"])
    assert (await channel_layer.receive(good))["frame_type"] == "pong"
