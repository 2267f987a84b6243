"""Drives lit-mux's own MCP server at /mcp with the official `mcp` package (streamable HTTP).

Usage: mcp_client.py BASE_URL API_KEY MODE SERVER_TO_REMOVE
MODE is the client's `mode`: "legacy" (initialize handshake, list_changed on the session's
stream) or "auto" (server/discover, 2026-07-28, list_changed through subscriptions/listen).
Lists the tools, calls some, removes SERVER_TO_REMOVE through the REST API, waits (bounded) for
notifications/tools/list_changed and lists again, then closes (ending its session). Prints one
JSON object with what the client saw, the SDK's logged warnings among it; the Rust test
(tests/mcp_endpoint.rs) asserts on it.
"""

import json
import logging
import sys

import anyio
import httpx2
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

base_url, api_key, mode, to_remove = sys.argv[1:5]
NOTIFICATION_WAIT_S = 10


class Warnings(logging.Handler):
    """What the SDK logs at WARNING and above (such as a failed session termination)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


warnings = Warnings()
logging.getLogger("mcp").addHandler(warnings)


def tool_view(tool):
    return {
        "description": tool.description,
        "input_schema": tool.input_schema,
        "output_schema": tool.output_schema,
        "annotations": tool.annotations.model_dump(by_alias=True, exclude_none=True)
        if tool.annotations
        else None,
    }


def result_view(result):
    return {
        "texts": [block.text for block in result.content if block.type == "text"],
        "is_error": bool(result.is_error),
    }


async def main():
    seen = {"mode": mode}
    changed = anyio.Event()

    async def on_message(message):
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:

        async def remove_server():
            response = await http.delete(f"{base_url}/mcp/servers/{to_remove}")
            seen["remove_status"] = response.status_code

        transport = streamable_http_client(f"{base_url}/mcp", http_client=http)
        async with Client(transport, mode=mode, message_handler=on_message) as client:
            seen["protocol_version"] = client.protocol_version
            seen["server_name"] = client.server_info.name if client.server_info else None
            seen["tools_list_changed"] = bool(
                client.server_capabilities.tools and client.server_capabilities.tools.list_changed
            )

            listed = await client.list_tools()
            seen["tools"] = {tool.name: tool_view(tool) for tool in listed.tools}

            first_echo = sorted(name for name in seen["tools"] if name.endswith("__echo"))[0]
            seen["called"] = first_echo
            seen["echo"] = result_view(await client.call_tool(first_echo, {"message": "hi from mcp"}))
            first_fail = first_echo.removesuffix("__echo") + "__fail"
            seen["fail"] = result_view(await client.call_tool(first_fail, {}))
            try:
                await client.call_tool("no_such__tool", {})
                seen["unknown"] = {"raised": False}
            except MCPError as error:
                seen["unknown"] = {"raised": True, "code": error.code, "message": error.message}

            if mode == "legacy":
                await remove_server()
                with anyio.move_on_after(NOTIFICATION_WAIT_S):
                    await changed.wait()
                seen["list_changed"] = changed.is_set()
            else:
                seen["list_changed"] = False
                async with client.listen(tools_list_changed=True) as subscription:
                    await remove_server()
                    with anyio.move_on_after(NOTIFICATION_WAIT_S):
                        async for event in subscription:
                            seen["event"] = type(event).__name__
                            seen["list_changed"] = True
                            break

            seen["tools_after"] = sorted(tool.name for tool in (await client.list_tools()).tools)
    # Leaving the client ended the session (DELETE /mcp in the handshake-era mode).
    seen["warnings"] = warnings.messages
    print(json.dumps(seen))


anyio.run(main)
