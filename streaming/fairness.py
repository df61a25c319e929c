"""How a worker shares its slots across tenants (docs/protocol.md §5 1.1, fairness).

Every worker keeps part of its slots for other tenants: one tenant runs at most its
*share* of a worker's slots at once (the tenant's ``max_running`` in the admin, else half
of the worker's slots, never less than 1). So whatever backlog one tenant has, every
worker has free slots for the others, with one worker or many. The poll then looks for
work past the backlog of tenants at their share (``RequestStore.list_due`` with
``exclude_tenants``) and takes what it found round-robin by tenant.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable

from django.db import DatabaseError

from connections.tenants import TenantPolicy, get_tenant_policy
from storage.requests.model import RequestRecord

log = logging.getLogger(__name__)

PolicyLookup = Callable[[str], TenantPolicy | None]


def share_for(policy: TenantPolicy | None, concurrency: int) -> int:
    """Slots of a worker with ``concurrency`` slots that one tenant may hold at once.

    The tenant's ``max_running`` when set (capped at the worker's slots), else half of
    the slots rounded up; never less than 1, so every tenant can run something.
    """
    wanted = policy.max_running if policy is not None and policy.max_running else None
    if wanted is None:
        wanted = math.ceil(concurrency / 2)
    return max(1, min(concurrency, wanted))


def lookup_share(tenant_id: str, concurrency: int, policies: PolicyLookup) -> int:
    """:func:`share_for` the tenant's policy (blocking: the policy may come from SQL).

    When the tenant database cannot be reached the default share applies: the worker
    keeps running requests rather than stopping every tenant.
    """
    try:
        policy = policies(tenant_id)
    except DatabaseError:
        log.warning("tenant settings unavailable; using the default share for %s", tenant_id)
        policy = None
    return share_for(policy, concurrency)


def lookup_shares(
    tenant_ids: Iterable[str], concurrency: int, policies: PolicyLookup = get_tenant_policy
) -> dict[str, int]:
    """:func:`lookup_share` of several tenants in one call (one thread hop)."""
    return {t: lookup_share(t, concurrency, policies) for t in tenant_ids}


def interleave_by_tenant(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    """``records`` taken round-robin by tenant, each tenant's in their given order
    (tenants in order of their first record), so one tenant's run of old requests does
    not get every free slot of a poll."""
    by_tenant: dict[str, list[RequestRecord]] = {}
    for record in records:
        by_tenant.setdefault(record.tenant_id, []).append(record)
    rounds = itertools.zip_longest(*by_tenant.values())
    return [record for batch in rounds for record in batch if record is not None]
