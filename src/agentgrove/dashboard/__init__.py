"""The web dashboard (``grove dashboard``): agents, transcripts, trees, workflow runs drawn as
live DAGs, budgets, and cost over time, served by FastAPI with updates pushed as server-sent
events. Every asset ships in the package; nothing is fetched from a CDN."""

from agentgrove.dashboard._app import create_app
from agentgrove.dashboard._server import serve_dashboard

__all__ = ["create_app", "serve_dashboard"]
