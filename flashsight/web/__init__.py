"""The chat page served at `/`: its routes, its assets and the conversation history behind it."""

from __future__ import annotations

from fastapi import FastAPI

from flashsight.server.settings import ServerSettings
from flashsight.web import api, page
from flashsight.web.store import ConversationStore


def install_web(app: FastAPI, settings: ServerSettings) -> None:
    app.state.conversations = ConversationStore(settings.database_path)
    app.include_router(api.router)
    app.include_router(page.page_router(settings))
    page.mount_assets(app)
