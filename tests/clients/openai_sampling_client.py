"""Sends sampling and generation parameters through the official `openai` package.

Usage: openai_sampling_client.py BASE_URL
Asks model `gpt` (an OpenAI-compatible backend) with every parameter, and `claude` (an
Anthropic backend) with a seed, which Anthropic's API lacks. Prints one JSON object with what
the client saw; the Rust test asserts on it and on what the backends received.
"""

import json
import sys

import openai
from openai import OpenAI

base_url = sys.argv[1]
client = OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=30)
seen = {}

reply = client.chat.completions.create(
    model="gpt",
    messages=[{"role": "user", "content": "hello"}],
    temperature=0.25,
    top_p=0.5,
    max_completion_tokens=64,
    stop=["END"],
    seed=7,
    presence_penalty=0.1,
    frequency_penalty=0.2,
    response_format={"type": "json_object"},
    user="python-user",
    logprobs=True,
    top_logprobs=2,
    n=1,
)
seen["reply"] = {
    "content": reply.choices[0].message.content,
    "choices": len(reply.choices),
}

try:
    client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hi"}], seed=7
    )
    seen["unsupported"] = None
except openai.BadRequestError as error:
    seen["unsupported"] = {"status": error.status_code, "message": error.message}

print(json.dumps(seen))
