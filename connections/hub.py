"""The per-process fan-out hub: a frame to a tenant or a user crosses the channel layer
once per server process, not once per socket.

Each server process keeps a :class:`Registry` of the sockets it holds (by connection id,
by tenant, by user of a tenant) and writes a frame to them itself, through each
socket's own frame path (the consumer's delivery guard and outbox): no per-socket
channel-layer message.

Between processes the hub uses the existing channel layer, no broker of its own: the
process has one *hub channel*; it joins the layer group of a tenant (or of a user)
when its first local socket of that tenant connects, and leaves it when the last one
goes; memberships are added again well before the layer's ``group_expiry``. A
publisher writes to its own local sockets directly and sends ONE ``group_send`` per
frame; every other process that holds sockets of that audience receives it once on
its hub channel, where one reader task writes it to its own sockets. A process skips
its own messages (it delivered them already).

Group names are hashes (the layer accepts only short ASCII names); a message carries
the exact tenant and user, and a process delivers only to its sockets of exactly that
audience, so a hash collision can never leak a frame to another tenant.

Capacity: ``channels_redis`` drops a ``group_send`` silently for a channel at
capacity (and the process-specific channels of one process share one Redis list, whose
length is what is compared), so hub channels get a large one (``channel_capacity`` for
``*!streamer.hub.*`` in ``CHANNEL_LAYERS``). Each message carries its publisher's
sequence number per audience; a reader that sees a gap counts the frames lost in
``streamer_hub_lost_total`` and logs it (docs/hub.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache
from channels.layers import BaseChannelLayer, get_channel_layer
from prometheus_client import Counter

log = logging.getLogger(__name__)

#: Prefix of every hub group, and of the part of a hub channel after its ``!``.
HUB_PREFIX = "streamer.hub"
#: The ``channel_capacity`` pattern of hub channels (streaming/settings.py).
HUB_CHANNEL_PATTERN = f"*!{HUB_PREFIX}.*"
HUB_MESSAGE = "streamer.hub"
#: Memberships are added again after this share of the layer's ``group_expiry``.
REFRESH_SHARE = 0.25
#: After a failed join (layer down), try again this soon.
RETRY_S = 1.0
#: Deliveries between two yields to the event loop: a fan-out to 10,000 local sockets
#: never holds the loop (other sockets' echoes, reads) for more than one such slice.
YIELD_EVERY = 16
#: (publisher, audience) pairs whose last sequence number a reader remembers.
MAX_TRACKED_SOURCES = 65_536

RELAYED = Counter("streamer_hub_relayed_total", "Hub frames sent to the other server processes")
RECEIVED = Counter("streamer_hub_received_total", "Hub frames received from other processes")
LOST = Counter(
    "streamer_hub_lost_total",
    "Hub frames another process sent that never arrived (the hub channel was full)",
)

#: A socket's frame path: takes a transport frame message, returns whether it went out.
Deliver = Callable[[dict[str, Any]], Awaitable[bool | None]]
#: ("t", tenant) or ("u", tenant, user): who a frame is for.
Audience = tuple[str, ...]


def audience_of(tenant_id: str, user_id: str | None = None) -> Audience:
    """The audience key of a tenant, or of one user of a tenant."""
    return ("t", tenant_id) if user_id is None else ("u", tenant_id, user_id)


def group_name(audience: Audience) -> str:
    """The layer group of an audience: a short ASCII name the layer accepts."""
    digest = hashlib.blake2b("\0".join(audience).encode(), digest_size=16).hexdigest()
    return f"{HUB_PREFIX}.{audience[0]}.{digest}"


@dataclass(frozen=True)
class Member:
    """One local socket: who holds it and how a frame reaches it."""

    connection_id: str
    tenant_id: str
    user_id: str
    deliver: Deliver = field(compare=False)

    @property
    def audiences(self) -> tuple[Audience, Audience]:
        return audience_of(self.tenant_id), audience_of(self.tenant_id, self.user_id)


class Registry:
    """The sockets of this process by connection id and by audience (plain bookkeeping,
    no I/O). Each change says which audiences gained their first or lost their last
    socket: those are the groups to join or leave."""

    def __init__(self) -> None:
        self._members: dict[str, Member] = {}
        self._by_audience: dict[Audience, dict[str, Member]] = {}

    def __len__(self) -> int:
        return len(self._members)

    def get(self, connection_id: str) -> Member | None:
        """The local socket of a connection, if this process holds it."""
        return self._members.get(connection_id)

    def add(self, member: Member) -> list[Audience]:
        """Add (or replace) a socket; the audiences that had no local socket before."""
        self.remove(member.connection_id)
        self._members[member.connection_id] = member
        first = []
        for audience in member.audiences:
            sockets = self._by_audience.setdefault(audience, {})
            if not sockets:
                first.append(audience)
            sockets[member.connection_id] = member
        return first

    def remove(self, connection_id: str) -> list[Audience]:
        """Remove a socket (unknown: nothing); the audiences left without a local socket."""
        member = self._members.pop(connection_id, None)
        if member is None:
            return []
        emptied = []
        for audience in member.audiences:
            sockets = self._by_audience.get(audience, {})
            sockets.pop(connection_id, None)
            if not sockets:
                self._by_audience.pop(audience, None)
                emptied.append(audience)
        return emptied

    def members(self, audience: Audience) -> list[Member]:
        """The local sockets of an audience, in the order they registered (a copy)."""
        return list(self._by_audience.get(audience, {}).values())

    def audiences(self) -> list[Audience]:
        """Every audience with at least one local socket."""
        return list(self._by_audience)

    def holds(self, audience: Audience) -> bool:
        return audience in self._by_audience


@dataclass
class HubReport:
    """What one hub send did: sockets of this process whose frame path took the frame,
    and whether the frame went to the other server processes through a shared layer
    (their sockets' outcomes are not known here)."""

    delivered: int = 0
    relayed: bool = False


class _Binding:
    """The hub's link to one event loop and one layer instance (tests build a new loop
    and layer per test; a server has one of each for its life)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, layer: BaseChannelLayer | None) -> None:
        self.loop = loop
        self.layer = layer
        self.channel: str | None = None
        self.joined: set[str] = set()
        self.failed: set[str] = set()
        self.locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.start_lock = asyncio.Lock()
        self.tasks: list[asyncio.Task[None]] = []
        self.wake = asyncio.Event()

    def lock(self, group: str) -> asyncio.Lock:
        lock = self.locks.get(group)
        if lock is None:
            lock = self.locks[group] = asyncio.Lock()
        return lock

    def stop(self) -> None:
        for task in self.tasks:
            if not task.done() and not task.get_loop().is_closed():
                task.cancel()
        self.tasks.clear()


class Hub:
    """The fan-out hub of this process (module-level :data:`hub`)."""

    def __init__(self, layer_alias: str = "default") -> None:
        self.layer_alias = layer_alias
        self.registry = Registry()
        self.origin = secrets.token_hex(8)
        self._binding: _Binding | None = None
        self._seq: LRUCache[Audience, int] = LRUCache(MAX_TRACKED_SOURCES)
        self._last_seen: LRUCache[tuple[str, Audience], int] = LRUCache(MAX_TRACKED_SOURCES)

    # -- sockets --------------------------------------------------------------------------

    async def register(self, member: Member) -> None:
        """A socket of this process is open: frames to its tenant and user reach it from
        now on, from this process at once and from the others once the joins are done
        (this returns after them; a layer that is down is retried in the background)."""
        binding = await self._bound()
        for audience in self.registry.add(member):
            await self._sync(binding, group_name(audience), audience)

    async def unregister(self, connection_id: str) -> None:
        """The socket closed: nothing more reaches it; groups left without a local
        socket are left."""
        binding = await self._bound()
        for audience in self.registry.remove(connection_id):
            await self._sync(binding, group_name(audience), audience)

    def reset(self) -> None:
        """Forget every socket and stop the tasks (tests; a server never needs it)."""
        if self._binding is not None:
            self._binding.stop()
        self._binding = None
        self.registry = Registry()
        self._seq.clear()
        self._last_seen.clear()

    # -- sending --------------------------------------------------------------------------

    async def send(self, tenant_id: str, user_id: str | None, message: dict[str, Any]) -> HubReport:
        """Send a transport frame message (``connections.transports.channels``) to every
        socket of a tenant, or of one user, held by any server process. Frames one task
        sends arrive on each socket in the order it sent them."""
        audience = audience_of(tenant_id, user_id)
        binding = await self._bound()
        report = HubReport(relayed=await self._relay(binding, audience, message))
        report.delivered = await self.deliver(audience, message)
        return report

    async def deliver(self, audience: Audience, message: dict[str, Any]) -> int:
        """Write a frame message to this process's sockets of ``audience``; how many of
        them took it (a closed or overflowing socket does not)."""
        delivered = 0
        for index, member in enumerate(self.registry.members(audience), 1):
            if index % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            try:
                taken = await member.deliver(message)
            except Exception:  # one broken socket never stops the fan-out
                log.warning("hub delivery to %s failed", member.connection_id, exc_info=True)
                continue
            delivered += taken is not False
        return delivered

    async def _relay(self, binding: _Binding, audience: Audience, message: dict[str, Any]) -> bool:
        """One ``group_send`` for every other process; True when it went to a shared layer."""
        if binding.layer is None or not shared(binding.layer):
            return False
        seq = self._seq[audience] = self._seq.get(audience, 0) + 1
        envelope = {
            "type": HUB_MESSAGE,
            "origin": self.origin,
            "seq": seq,
            "audience": list(audience),
            "frame": message,
        }
        try:
            await binding.layer.group_send(group_name(audience), envelope)
        except Exception as exc:  # the layer is down: the other processes miss this frame
            log.warning("hub relay to other processes failed: %s", type(exc).__name__)
            return False
        RELAYED.inc()
        return True

    # -- the layer ------------------------------------------------------------------------

    async def _bound(self) -> _Binding:
        """The binding of the running loop and the current layer, started on first use."""
        loop = asyncio.get_running_loop()
        layer = get_channel_layer(self.layer_alias)
        binding = self._binding
        if binding is None or binding.loop is not loop or binding.layer is not layer:
            if binding is not None:
                binding.stop()
                if binding.layer is not layer:
                    self.registry = Registry()  # its sockets were on the old layer
            binding = self._binding = _Binding(loop, layer)
        if binding.channel is None and layer is not None:
            async with binding.start_lock:
                if binding.channel is None:
                    binding.channel = hub_channel(await layer.new_channel())
                    binding.tasks = [
                        loop.create_task(self._read(binding)),
                        loop.create_task(self._refresh(binding)),
                    ]
                    await self.refresh(binding)  # sockets registered on another loop
        return binding

    async def _sync(self, binding: _Binding, group: str, audience: Audience) -> None:
        """Make the layer membership of ``group`` match the registry (one group at a
        time, so a join and a leave of the same group never cross)."""
        if binding.layer is None or binding.channel is None:
            return
        async with binding.lock(group):
            wanted = self.registry.holds(audience)
            try:
                if wanted and group not in binding.joined:
                    await binding.layer.group_add(group, binding.channel)
                    binding.joined.add(group)
                elif not wanted and group in binding.joined:
                    binding.joined.discard(group)
                    await binding.layer.group_discard(group, binding.channel)
            except Exception as exc:
                log.warning("hub could not update group membership: %s", type(exc).__name__)
                binding.failed.add(group)
                binding.wake.set()
                return
            binding.failed.discard(group)

    async def _refresh(self, binding: _Binding) -> None:
        """Add every membership again before the layer forgets it (``group_expiry``), and
        retry joins that failed."""
        assert binding.layer is not None and binding.channel is not None
        every = float(getattr(binding.layer, "group_expiry", 86400)) * REFRESH_SHARE
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(binding.wake.wait(), RETRY_S if binding.failed else every)
            binding.wake.clear()
            await self.refresh(binding)

    async def refresh(self, binding: _Binding | None = None) -> None:
        """Join again every group this process has sockets of (one pass)."""
        binding = binding or await self._bound()
        if binding.layer is None or binding.channel is None:
            return
        for audience in self.registry.audiences():
            group = group_name(audience)
            binding.joined.discard(group)
            await self._sync(binding, group, audience)

    async def _read(self, binding: _Binding) -> None:
        """The one reader of this process: hub messages from other processes, in order."""
        assert binding.layer is not None and binding.channel is not None
        while True:
            try:
                message = await binding.layer.receive(binding.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the layer is down: wait, then read again
                log.warning("hub reader: layer unavailable (%s)", type(exc).__name__)
                await asyncio.sleep(RETRY_S)
                continue
            try:
                await self._dispatch(message)
            except Exception:  # a malformed message never stops the reader
                log.warning("hub reader: message not delivered", exc_info=True)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if message["origin"] == self.origin:
            return  # published here: delivered to this process's sockets already
        audience = tuple(message["audience"])
        self._count_gap(message["origin"], audience, int(message["seq"]))
        RECEIVED.inc()
        await self.deliver(audience, message["frame"])

    def _count_gap(self, origin: str, audience: Audience, seq: int) -> None:
        last = self._last_seen.get((origin, audience))
        self._last_seen[(origin, audience)] = seq
        if last is not None and seq > last + 1:
            LOST.inc(seq - last - 1)
            log.warning("hub: %d frame(s) from another process never arrived", seq - last - 1)

    def channel(self) -> str | None:
        """This process's hub channel on the current binding (None before first use)."""
        return self._binding.channel if self._binding is not None else None


def hub_channel(process_channel: str) -> str:
    """The hub channel of this process, made from a channel the layer issued to it:
    the same process part (``specific.<process>!``), so that ``channels_redis``'s one
    receive loop per process reads it along with the consumers' channels (a channel of
    another prefix would only be read while its own reader holds that loop), and a name
    of its own after the ``!`` that ``channel_capacity`` matches (``*!streamer.hub.*``)."""
    process_part = process_channel.partition("!")[0]
    return f"{process_part}!{HUB_PREFIX}.{secrets.token_hex(12)}"


def shared(layer: BaseChannelLayer) -> bool:
    """Whether other processes can read what this layer carries: not for the
    process-local layer of a Redis-less run (``connections.layers.ProcessChannelLayer``,
    which tells by offering ``holds``)."""
    return getattr(layer, "holds", None) is None


hub = Hub()
