"""Actors living inside a running aiohttp application's own loop answer its handlers."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
from aiohttp import web

from actors import AsyncioActor, Runtime


class HitCounter(AsyncioActor):
    def __init__(self) -> None:
        super().__init__()
        self.hits: dict[str, int] = {}

    async def hit(self, path: str) -> dict[str, object]:
        await asyncio.sleep(0)  # an async handler, awaited on the app's loop
        self.hits[path] = self.hits.get(path, 0) + 1
        return {"path": path, "hits": self.hits[path], "thread": threading.get_ident()}


RUNTIME = web.AppKey("runtime", Runtime)
COUNTER = web.AppKey("counter", object)


async def on_startup(app: web.Application) -> None:
    app[RUNTIME] = Runtime.attach()  # the app's own running loop
    app[COUNTER] = HitCounter.start().proxy()


async def on_cleanup(app: web.Application) -> None:
    await app[RUNTIME].aclose()


async def handle(request: web.Request) -> web.Response:
    result = await request.app[COUNTER].hit(request.path)
    return web.json_response(result)


async def test_actor_answers_aiohttp_handlers_in_the_apps_loop() -> None:
    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_get("/{name}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    try:
        runtime = app[RUNTIME]
        assert runtime.loop is asyncio.get_running_loop() and not runtime.owns_loop
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            bodies = []
            for path in ("/a", "/a", "/b"):
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    assert response.status == 200
                    bodies.append(await response.json())
        assert [(b["path"], b["hits"]) for b in bodies] == [("/a", 1), ("/a", 2), ("/b", 1)]
        assert {b["thread"] for b in bodies} == {threading.get_ident()}  # no extra thread
        counter_ref = app[COUNTER].actor_ref
    finally:
        await runner.cleanup()
    assert not counter_ref.is_alive()  # on_cleanup stopped the app's actors
