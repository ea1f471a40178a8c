"""Drives mcp-delegate replicas behind a load balancer with the official
Python MCP client (PyPI `mcp`), one client per user, until a deadline.

Usage: replica_client.py URL MODE SECONDS
MODE is 'legacy' (initialize handshake) or 'auto' (server/discover, 2026-07-28).
The environment variable MCP_USERS holds a JSON list of
{"name": ..., "token": ..., "role": <the database role the calls must run as>}.

Every call reads `current_user` and whether every row it sees is the user's
own. A call that fails (a transport error, or an error result that says the
database or the server was not there) is retried on a new client, as a
client of a load-balanced service does; a call still failing after five
tries is a failure. Prints one JSON object: calls, retried (calls that
needed more than one try), failed, crossed (a call that ran as another role
or saw another role's rows), with the first few examples.
"""

import asyncio
import contextlib
import json
import os
import sys
import time

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

SQL = (
    "SELECT current_user AS u, count(*)::int AS n, "
    "coalesce(bool_and(owner = current_user), true) AS own FROM notes"
)
CALL_TIMEOUT = 15


async def open_client(stack: contextlib.AsyncExitStack, url: str, mode: str, token: str):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return await stack.enter_async_context(
        Client(streamable_http_client(url, http_client=http), mode=mode)
    )


async def one_call(client):
    result = await asyncio.wait_for(
        client.call_tool("sql1-delegate", {"action": "query", "sql": SQL}), CALL_TIMEOUT
    )
    if result.is_error:
        raise RuntimeError(result.content[0].text if result.content else "error result")
    return result.structured_content["rows"][0]


async def worker(url: str, mode: str, user: dict, deadline: float, stats: dict) -> None:
    stack = contextlib.AsyncExitStack()
    client = None
    while time.monotonic() < deadline:
        errors = []
        row = None
        for attempt in range(5):
            try:
                if client is None:
                    client = await asyncio.wait_for(
                        open_client(stack, url, mode, user["token"]), CALL_TIMEOUT
                    )
                row = await one_call(client)
                break
            except BaseException as error:  # noqa: BLE001 (any failure is retried)
                if isinstance(error, (KeyboardInterrupt, SystemExit)):
                    raise
                errors.append(f"{type(error).__name__}: {error}"[:300])
                with contextlib.suppress(BaseException):
                    await stack.aclose()
                stack = contextlib.AsyncExitStack()
                client = None
                await asyncio.sleep(0.1)
        stats["calls"] += 1
        if errors and row is not None:
            stats["retried"] += 1
            if len(stats["retry_examples"]) < 5:
                stats["retry_examples"].append({"user": user["name"], "errors": errors})
        if row is None:
            stats["failed"] += 1
            if len(stats["failure_examples"]) < 5:
                stats["failure_examples"].append({"user": user["name"], "errors": errors})
            continue
        if row["u"] != user["role"] or row["own"] is not True:
            stats["crossed"] += 1
            if len(stats["crossed_examples"]) < 5:
                stats["crossed_examples"].append({"user": user["name"], "row": row})
    with contextlib.suppress(BaseException):
        await stack.aclose()


async def main(url: str, mode: str, seconds: float) -> None:
    users = json.loads(os.environ["MCP_USERS"])
    stats = {
        "calls": 0,
        "retried": 0,
        "failed": 0,
        "crossed": 0,
        "retry_examples": [],
        "failure_examples": [],
        "crossed_examples": [],
    }
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(worker(url, mode, user, deadline, stats) for user in users))
    print(json.dumps(stats))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
