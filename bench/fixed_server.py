"""A minimal server answering every POST with one fixed envelope (the call-overhead benchmark's peer).

Run: python bench/fixed_server.py PORT  (prints "ready" when listening)."""

from __future__ import annotations

import sys

from aiohttp import web

BODY = b'{"msg":"Success","fail":false,"trace":"","code":"0","data":"6230de2c-281a-47fe-9d5d-b5f6ac60f482push","bizCode":"","tm":0,"ok":true}'


async def answer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    print("ready", flush=True)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
