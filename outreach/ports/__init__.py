"""Interfaces owned by their consumers (dispatch, scheduling, imports, cli, web).

Adapters in ``db`` and ``channels`` implement them; ``app.build`` picks which. One
module per area; everything is imported from ``outreach.ports``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from outreach.ports.inbound import (
    Applied,
    BounceRules,
    Inbound,
    Recorded,
    ReturnedMail,
    ReturnedRecipient,
)
from outreach.ports.outbox import (
    Campaigns,
    Claimed,
    DeliveryLog,
    EmailChannel,
    Outbox,
    Outcome,
    SendResult,
    StepInfo,
    Waiting,
)
from outreach.ports.posts import PostItem, PostResult, Posts, PostTarget
from outreach.ports.processes import Lead, Processes, ProcessInfo
from outreach.ports.staff import Consent, Unsubscribed, Users
from outreach.ports.store import BatchOutcome, ContactStore, ContactWriter

Clock = Callable[[], datetime]  # the time now, aware UTC; a rehearsal's runs faster

__all__ = ["Applied", "BatchOutcome", "BounceRules", "Campaigns", "Claimed", "Clock", "Consent", "ContactStore", "ContactWriter", "DeliveryLog", "EmailChannel", "Inbound", "Lead", "Outbox", "Outcome", "PostItem", "PostResult", "PostTarget", "Posts", "ProcessInfo", "Processes", "Recorded", "ReturnedMail", "ReturnedRecipient", "SendResult", "StepInfo", "Unsubscribed", "Users", "Waiting"]
