#!/usr/bin/python3
"""A remotecommand client over WebSocket, written with websocket-client
(Debian's python3-websocket), independent of berth's Rust code: the
streaming end-to-end tests drive berth's server with it.

Usage: ws_remotecommand.py URL PROTOCOL [STDIN_TEXT]

Opens URL (http:// is turned into ws://) offering PROTOCOL (for example
"v5.channel.k8s.io" or "v4.channel.k8s.io"), sends STDIN_TEXT on channel 0
if given, then closes stdin (v5: the [255, 0] close message; v4 has none,
so the command must not wait for EOF), reads channels 1 (stdout), 2
(stderr) and 3 (error) until the server closes, and prints one JSON object:
{"protocol": ..., "stdout": ..., "stderr": ..., "error": ..., "close_code": ...}
(close_code: the server's close frame's status code, null if it had none
or the connection ended without a close frame).
On a failed handshake it prints {"status": <HTTP status>, "body": ...}.
"""

import json
import sys

import websocket

STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255


def main():
    url = sys.argv[1].replace("http://", "ws://", 1)
    protocol = sys.argv[2]
    stdin = sys.argv[3] if len(sys.argv) > 3 else None
    try:
        ws = websocket.create_connection(url, subprotocols=[protocol], timeout=20)
    except websocket.WebSocketBadStatusException as e:
        print(json.dumps({"status": e.status_code, "body": e.resp_body.decode() if e.resp_body else ""}))
        return
    out = {"protocol": ws.getsubprotocol(), "stdout": "", "stderr": "", "error": "", "close_code": None}
    if stdin is not None:
        ws.send_binary(bytes([STDIN]) + stdin.encode())
        if protocol.startswith("v5."):
            ws.send_binary(bytes([CLOSE, STDIN]))
    names = {STDOUT: "stdout", STDERR: "stderr", ERROR: "error"}
    while True:
        try:
            opcode, data = ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            break
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            if len(data) >= 2:
                out["close_code"] = int.from_bytes(data[:2], "big")
            break
        if opcode != websocket.ABNF.OPCODE_BINARY or not data:
            continue
        name = names.get(data[0])
        if name:
            out[name] += data[1:].decode(errors="replace")
    ws.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
