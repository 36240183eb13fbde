"""``outreach contacts show``: one contact with every field, tag and attribute, and
the mail that came back about it (bounces, complaints, auto-replies: what each did, on
which delivery)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from outreach.app import Services
from outreach.cli.common import out_console
from outreach.domain.contact import Contact


def print_contact(services: Services, contact: Contact, fields: dict[str, Any]) -> None:
    """``fields``: the contact as ``contacts list --format json`` writes it."""
    table = Table(show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in fields.items():
        if key == "attrs":
            for name, attr in value.items():
                table.add_row(f"attr.{name}", escape(str(attr)))
            continue
        shown = ", ".join(value) if isinstance(value, list) else ("" if value is None else str(value))
        table.add_row(key, escape(shown))
    console = out_console()
    console.print(table)
    returned = services.inbound.about_contact(contact.id)
    if returned:
        console.print("\n[bold]mail that came back[/] (latest first)")
        for r in returned:
            code = f" {r['status']}" if r["status"] else ""
            words = f": {r['diagnostic']}" if r["diagnostic"] else ""
            console.print(f"  {r['dated']:%Y-%m-%d %H:%M} UTC  {r['kind']}{code} -> {r['effect']} on delivery "
                          f"{r['delivery_id']} (returned message {r['inbound_id']}){escape(words)}")  # fmt: skip
