"""Runs a two-step agent loop with the official `openai` package against lit-mux's echo backend:
the model (echo) calls the client's tool, the client runs it and sends the result back, the
model answers. Once plain and once streamed, and once naming a tool that is not offered.

Input on stdin: {"base_url": ...}. Prints one JSON object with what the client saw.
"""

import json
import sys

from openai import OpenAI

base_url = json.load(sys.stdin)["base_url"]
client = OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=30)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def run_tool(name, arguments):
    """The client's own tool."""
    assert name == "get_weather", name
    return f"sunny in {json.loads(arguments)['city']}"


def plain_loop(question):
    messages = [{"role": "user", "content": question}]
    steps = []
    for _ in range(4):
        reply = client.chat.completions.create(model="echo", messages=messages, tools=TOOLS)
        choice = reply.choices[0]
        calls = choice.message.tool_calls or []
        steps.append(
            {
                "finish_reason": choice.finish_reason,
                "content": choice.message.content,
                "calls": [
                    {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                    for c in calls
                ],
            }
        )
        if not calls:
            break
        messages.append(choice.message.model_dump(exclude_none=True))
        for call in calls:
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call.id,
                    "content": run_tool(call.function.name, call.function.arguments),
                }
            )
    return steps


def streamed_loop(question):
    messages = [{"role": "user", "content": question}]
    steps = []
    for _ in range(4):
        stream = client.chat.completions.create(
            model="echo", messages=messages, tools=TOOLS, stream=True
        )
        text, calls, finish = "", {}, None
        for chunk in stream:
            for choice in chunk.choices:
                delta = choice.delta
                if delta.content:
                    text += delta.content
                for piece in delta.tool_calls or []:
                    call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                    if piece.id:
                        call["id"] = piece.id
                    if piece.function and piece.function.name:
                        call["name"] += piece.function.name
                    if piece.function and piece.function.arguments:
                        call["arguments"] += piece.function.arguments
                if choice.finish_reason:
                    finish = choice.finish_reason
        ordered = [calls[i] for i in sorted(calls)]
        steps.append({"finish_reason": finish, "content": text, "calls": ordered})
        if not ordered:
            break
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments"]},
                    }
                    for c in ordered
                ],
            }
        )
        for c in ordered:
            messages.append(
                {"role": "tool", "tool_call_id": c["id"], "content": run_tool(c["name"], c["arguments"])}
            )
    return steps


call = json.dumps({"tool": "get_weather", "arguments": {"city": "Paris"}})
openai_ish = json.dumps({"name": "get_weather", "arguments": json.dumps({"city": "Oslo"})})
not_offered = json.dumps({"tool": "launch_rockets", "arguments": {}})
print(
    json.dumps(
        {
            "plain": plain_loop(call),
            "streamed": streamed_loop(openai_ish),
            "not_offered": plain_loop(not_offered),
            "not_offered_streamed": streamed_loop(not_offered),
        }
    )
)
