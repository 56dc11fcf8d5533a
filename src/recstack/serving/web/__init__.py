"""The web UI: HTML templates and static assets (plain CSS and vanilla JS, no CDN, no build step),
served by the API process. `create_app` includes ``router`` (pages + release-page routes, see
`recstack.serving.api.routers.web`) and mounts ``static/`` at ``/static``."""

from __future__ import annotations

from recstack.serving.api.routers.web import WEB_DIR, not_found_page, render_page, router

__all__ = ["WEB_DIR", "not_found_page", "render_page", "router"]
