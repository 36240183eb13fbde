"""The channels a step can use, each declared once: its name (as plans write it), the
kind of template it renders (``NAME.KIND.j2``), whether it goes to each contact of an
audience or publishes items of its own, and what a delivery found ``sending`` after a
crash means. Plans, templates, firing, posting and crash recovery read this registry.

Adding a channel: its module in ``outreach/channels/`` (what sends), one ``register``
line here, and one line in ``app.SENDERS`` naming its sender (a channel that is not
per contact; email goes through ``dispatch``). Its items are rendered by the
renderer of its template kind (``posting.prepare``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Channel:
    name: str
    template_kind: str
    per_contact: bool  # one delivery per contact of the audience (else: items, e.g. posts)
    resend_after_crash: bool  # send again (labelled uncertain) or leave it to a person
    after_crash: str  # what the log says a crashed delivery becomes
    units: str  # what its deliveries are called in messages
    templated: bool = True  # renders NAME.KIND.j2 (a report is made from the log instead)


_REGISTRY: dict[str, Channel] = {}


def register(channel: Channel) -> Channel:
    _REGISTRY[channel.name] = channel
    return channel


def channel(name: str) -> Channel:
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def posted() -> tuple[str, ...]:
    """The channels whose deliveries are items of their own (posts, releases), not one
    per contact: the ``Poster`` publishes them."""
    return tuple(c.name for c in _REGISTRY.values() if not c.per_contact)


def template_kinds() -> tuple[str, ...]:
    """The kinds of template files (``NAME.KIND.j2``) the channels render."""
    return tuple(dict.fromkeys(c.template_kind for c in _REGISTRY.values() if c.templated))


EMAIL = register(Channel("email", "email", per_contact=True, resend_after_crash=True,
                         after_crash="sending it again: the recipient may get it twice",
                         units="deliveries"))  # fmt: skip
X = register(Channel("x", "x", per_contact=False, resend_after_crash=False,
                     after_crash="not posted again: a person must decide", units="post(s)"))  # fmt: skip
PRESS = register(Channel("press", "press", per_contact=False, resend_after_crash=True,
                         after_crash="publishing it again (the same page and feed entry)",
                         units="release"))  # fmt: skip
REPORT = register(Channel("report", "report", per_contact=False, resend_after_crash=True,
                          after_crash="mailing it again: staff may get the report twice",
                          units="report email", templated=False))  # fmt: skip
