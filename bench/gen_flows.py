#!/usr/bin/env python3
"""Writes a proxlet flow file of N flows with BODY-byte responses, straight
from the format's spec (docs/flow-file.md): a second, independent writer,
used by bench/flows.sh to make large files quickly.

    bench/gen_flows.py N BODY OUT
"""
import json
import os
import struct
import sys
import zlib

n, body_len, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = os.urandom(body_len)
start = 1_780_000_000_000_000  # µs since the epoch
with open(out, "wb") as f:
    f.write(b"\x89PXFLW\r\n" + struct.pack("<II", 1, 0))
    for i in range(1, n + 1):
        status = 404 if i % 100 == 0 else 200
        t = start + i * 1000
        head = {
            "id": i,
            "mode": "regular",
            "client": "127.0.0.1:40000",
            "server": "127.0.0.1:443",
            "timings": {
                "client_connect": t - 50, "request_start": t, "request_end": t + 10,
                "response_start": t + 400, "response_end": t + 500,
            },
            "request": {
                "method": "GET",
                "url": "https://registry.example/pkg/%d/file-%d.tgz" % (i % 500, i),
                "version": "HTTP/1.1",
                "headers": [["host", "registry.example"], ["user-agent", "bench/1"],
                            ["accept", "*/*"]],
                "body": {"size": 0, "truncated": False},
            },
            "response": {
                "status": status,
                "version": "HTTP/1.1",
                "headers": [["content-type", "application/octet-stream"],
                            ["content-length", str(body_len)]],
                "body": {"size": body_len, "truncated": False},
            },
            "plugins": [{"plugin": "cache", "hook": "on-request",
                         "decision": "continue", "micros": 3}],
        }
        head = json.dumps(head, separators=(",", ":")).encode()
        f.write(struct.pack("<IIII", len(head), 0, body_len, zlib.crc32(head)))
        f.write(head)
        f.write(body)
