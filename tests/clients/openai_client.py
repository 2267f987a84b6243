"""Drives lit-mux's /v1 front door with the official `openai` package.

Usage: openai_client.py BASE_URL API_KEY SESSION_ID
Prints one JSON object with what the client saw; the Rust test asserts on it.
"""

import json
import sys

import openai
from openai import OpenAI

base_url, api_key, session_id = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0, timeout=30)
seen = {"client_version": openai.__version__}

seen["models"] = [model.id for model in client.models.list()]

reply = client.chat.completions.create(
    model="echo",
    messages=[
        {"role": "system", "content": "ignored by echo"},
        {"role": "user", "content": "hello from python"},
    ],
)
seen["reply"] = {
    "content": reply.choices[0].message.content,
    "finish_reason": reply.choices[0].finish_reason,
    "model": reply.model,
    "object": reply.object,
}

stream = client.chat.completions.create(
    model="echo/echo",
    messages=[{"role": "user", "content": "streamed word by word"}],
    stream=True,
    extra_body={"session_id": session_id},
)
pieces, finish = [], None
for chunk in stream:
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
seen["stream"] = {"pieces": pieces, "finish_reason": finish}

try:
    client.chat.completions.create(
        model="no-such-backend/x", messages=[{"role": "user", "content": "hi"}]
    )
    seen["unknown_model"] = None
except openai.NotFoundError as error:
    seen["unknown_model"] = {
        "status": error.status_code,
        "code": error.code,
        "type": error.type,
        "message": error.message,
    }

try:
    OpenAI(base_url=base_url + "/v1", api_key="wrong", max_retries=0).models.list()
    seen["wrong_key"] = None
except openai.AuthenticationError as error:
    seen["wrong_key"] = {"status": error.status_code}

print(json.dumps(seen))
