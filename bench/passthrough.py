"""The baselines for ``make bench``: a plain pass-through proxy with no privacy work, and
(``--mask``) the floor of a redacting proxy: the same proxy that parses each JSON answer
with orjson, nulls the given field names in every record and dumps it again, with no
metadata, guards, policy or audit.

Same server (uvicorn) and the same upstream client as the gateway (aiohttp, no cookie jar),
so the differences are what the gateway's enforcement costs.
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import orjson
import uvicorn

HOP = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"host",
    b"content-length",
}


def make_app(upstream: str, mask: tuple[str, ...] = ()) -> Any:
    session: aiohttp.ClientSession | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    if session is not None:
                        await session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if session is None:
            session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
            )
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in HOP]
        url = (
            upstream
            + scope["path"]
            + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        )
        async with session.request(scope["method"], url, headers=headers, data=body or None) as r:
            out = [(k, v) for k, v in r.raw_headers if k.lower() not in HOP]
            if mask and r.status == 200:
                page = orjson.loads(await r.read())
                for record in page.get("data") or ():
                    for name in mask:
                        if name in record:
                            record[name] = None
                raw = orjson.dumps(page)
                out.append((b"content-length", str(len(raw)).encode()))
                await send({"type": "http.response.start", "status": r.status, "headers": out})
                await send({"type": "http.response.body", "body": raw})
                return
            await send({"type": "http.response.start", "status": r.status, "headers": out})
            async for chunk in r.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--upstream", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mask", default="", help="comma-separated field names to null")
    a = p.parse_args()
    uvicorn.run(
        make_app(a.upstream.rstrip("/"), tuple(n for n in a.mask.split(",") if n)),
        host="127.0.0.1",
        port=a.port,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
