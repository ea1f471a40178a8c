"""Drives mcp-delegate with the official Python MCP client (PyPI `mcp`).

Usage: python_client.py URL MODE TOOL
MODE is 'legacy' (initialize handshake) or 'auto' (server/discover, 2026-07-28).
A bearer token, if any, comes from the environment variable MCP_BEARER_TOKEN.
Prints one JSON object with what the client saw; exits non-zero on failure.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def connect(url: str, mode: str) -> Client:
    token = os.environ.get("MCP_BEARER_TOKEN")
    if not token:
        return Client(url, mode=mode)
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode=mode)


async def main(url: str, mode: str, tool: str) -> None:
    async with connect(url, mode) as client:
        tools = await client.list_tools()
        ok = await client.call_tool(tool, {"message": "hello from python"})
        failed = await client.call_tool(tool, {"message": "boom", "panic": True})
        print(
            json.dumps(
                {
                    "protocolVersion": client.session.protocol_version
                    if hasattr(client.session, "protocol_version")
                    else None,
                    "tools": [t.name for t in tools.tools],
                    "structured": ok.structured_content,
                    "okIsError": ok.is_error,
                    "failedIsError": failed.is_error,
                    "failedText": failed.content[0].text,
                }
            )
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
