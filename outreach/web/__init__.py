"""The web pages: staff pages behind a sign-in, and the few public routes that links
in messages and the newsroom need. ``create_app(services)`` makes the ASGI
application; ``outreach serve`` runs it with uvicorn."""

from outreach.web.app import create_app

__all__ = ["create_app"]
