#!/usr/bin/python3
"""A CRI client over grpcio (Debian's python3-grpcio, gRPC's C core),
independent of berth's Rust code and of tonic: the transport end-to-end
tests drive berthd's CRI socket with it.

Usage: grpc_version.py SOCKET AUTHORITY...

For each AUTHORITY opens a channel to unix:SOCKET whose :authority is
AUTHORITY ("-" keeps grpcio's default), then calls
RuntimeService/Version three times and ImageService/ListImages once on it
(repeated calls reuse HPACK dynamic-table entries), with raw serialized
messages (both requests are empty messages: b""). Prints one JSON list,
one object per AUTHORITY:
{"authority": ..., "responses": [<hex of each response>]} or
{"authority": ..., "error": "<status code name>", "details": ...}.

grpcio 1.57 and later send the socket path, percent-encoded, as the
default authority; Debian 12's 1.51 sends "localhost"; grpc-java, .NET and
grpcurl send the path as it is. Naming the authority covers them all.
"""

import json
import sys

import grpc

CALLS = [("/runtime.v1.RuntimeService/Version", 3), ("/runtime.v1.ImageService/ListImages", 1)]


def call_all(socket, authority):
    options = [] if authority == "-" else [("grpc.default_authority", authority)]
    with grpc.insecure_channel("unix:" + socket, options=options) as channel:
        responses = []
        try:
            for method, times in CALLS:
                for _ in range(times):
                    responses.append(channel.unary_unary(method)(b"", timeout=20).hex())
        except grpc.RpcError as e:
            return {"authority": authority, "error": e.code().name, "details": e.details()}
        return {"authority": authority, "responses": responses}


def main():
    socket = sys.argv[1]
    print(json.dumps([call_all(socket, a) for a in sys.argv[2:]]))


if __name__ == "__main__":
    main()
