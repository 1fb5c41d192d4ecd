#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets (fuzz/src/lib.rs documents the input formats) into
DIR/<target>/: request bodies from the unit and end-to-end tests, provider responses, and the
repo's config files. `make fuzz` starts from these plus the committed, minimised corpus."""
import glob, hashlib, json, os, random, sys

out = sys.argv[1] if len(sys.argv) > 1 else "fuzz/seeds"
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

def put(target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)

bodies = [
    b'{"model":"auto","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"first question"},'
    b'{"role":"assistant","content":"answer"},{"role":"user","content":[{"type":"text","text":"second"},'
    b'{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"part"}]}],"stream":true}',
    b'{"model":"auto","messages":[],"tools":[{"type":"function"}],"response_format":{"type":"json_object"}}',
    b'{ "messages": [{"role":"user","content":"hi \\"model\\": x"}], "model" : "auto", "temperature": 0.70 }',
    b'{"model":"auto","prompt":["a","b"]}',
    b'{"model":"auto","system":"sys","messages":[{"role":"user","content":"q"}]}',
    b'{"model":"big","input":"embed me"}',
    b'{"model":"small","functions":null,"tools":[]}',
    b'{"model":"auto","model":"big"}',
    b'{"model":"auto","mod\\u0065l":"big"}',
    b'{"mod\\u0065l":"big"}',
    b'{"model":null,"model":"big"}',
    b'{"model":["big"]}',
    b'{"model":42}',
    b'{"model":"\\ud800"}',
    b'{"messages": []}',
    b'{not json',
    b'[]',
    b'["auto"]',
    b'{"model":"writer","temperature":0.25,"messages":[{"role":"user","content":"python"}]}',
    b'{"model":"auto","stream":true,"messages":[{"role":"user","content":"write rust code"}]}',
    b'{"model":"\xc3\xa9","messages":[{"role":"developer","content":"d"},{"role":"user","content":"\\u0000"}]}',
]
for b in bodies:
    put("request", b"\x00" + b)
    put("request", b"\x02" + b)
    put("fail_open", b"\x00" + b)
    put("fail_open", b"\x02" + b)
rng = random.Random(12)
for _ in range(40):
    script = bytes(rng.randrange(256) for _ in range(rng.randrange(4, 80)))
    put("request", bytes([1 | (rng.randrange(128) << 1)]) + script)
    put("fail_open", bytes([1 | (rng.randrange(128) << 1)]) + script)
    put("usage", bytes([2 | rng.randrange(2) | (rng.randrange(8) << 2)]) + script)

responses_json = [
    b'{"id":"x","usage":{"prompt_tokens":11,"completion_tokens":22,"prompt_tokens_details":{"cached_tokens":3}}}',
    b'{"usage":{"input_tokens":4,"output_tokens":9,"cache_read_input_tokens":2}}',
    b'{"choices":[{"message":{"content":"hi"}}]}',
]
responses_sse = [
    b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}\r\n\r\ndata: [DONE]\n\n',
    b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":15}}\n\n',
    b': keep-alive\n\ndata: {"choices":[]}\n\n',
]
for b in responses_json:
    for splits in range(3):
        put("usage", bytes([splits << 2]) + bytes(rng.randrange(256) for _ in range(splits)) + b)
for b in responses_sse:
    for splits in range(4):
        put("usage", bytes([1 | splits << 2]) + bytes(rng.randrange(256) for _ in range(splits)) + b)

for path in sorted(glob.glob(os.path.join(root, "config", "**", "*.yaml"), recursive=True)
                   + glob.glob(os.path.join(root, "tests", "e2e", "*.yaml"))
                   + glob.glob(os.path.join(root, "bench", "*.yaml"))):
    with open(path, "rb") as f:
        put("config", f.read())
