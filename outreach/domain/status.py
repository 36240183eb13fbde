"""The statuses of campaigns, steps and deliveries. StrEnums: stored and compared as
their plain values, named in code."""

from __future__ import annotations

from enum import StrEnum


class CampaignStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    SCHEDULED = "scheduled"  # a job waits for its instant
    HELD = "held"  # its instant came, but the campaign may not send (approval, pause)
    MISSED = "missed"  # its instant passed beyond its grace while nothing ran
    WAITING = "waiting"  # fired, waiting for the steps it requires
    ACTIVE = "active"  # its deliveries are being sent
    PAUSED = "paused"  # by a person, or because the relay refuses or looks down
    DONE = "done"  # every delivery final
    FAILED = "failed"  # cannot be sent at all (the reason is logged)
    CANCELLED = "cancelled"


# A step in one of these has sent nothing: a reschedule moves it.
NOT_SENT = (StepStatus.SCHEDULED, StepStatus.HELD, StepStatus.MISSED)
# A step in one of these is over: nothing of it goes out any more.
OVER = (StepStatus.DONE, StepStatus.CANCELLED, StepStatus.MISSED)


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # claimed: a sender has it now
    SENT = "sent"
    DEFERRED = "deferred"  # a temporary failure: retried at due_at
    FAILED = "failed"
    SKIPPED = "skipped"  # not sent on purpose (unsubscribed since, step cancelled...)
    UNCERTAIN = "uncertain"  # a post whose outcome is unknown: a person decides


# Not final: someone still has to send these, or decide about them.
UNFINISHED = (DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED, DeliveryStatus.SENDING,
              DeliveryStatus.UNCERTAIN)  # fmt: skip
