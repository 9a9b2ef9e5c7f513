#!/usr/bin/python3
"""A second Docker API client, independent of the docker CLI and of
berth's Rust code: docker-py (Debian's python3-docker) drives berthd's
Docker socket through the flows the end-to-end tests name.

Usage: docker_py.py SOCKET FLOW [ARG...]

Negotiates the API version (version="auto"), runs FLOW and prints one
JSON object with what it saw. Errors from the API print as
{"error": <HTTP status>, "explanation": ...} and exit 0, so the test can
assert on them; anything else fails loudly.

Flows:
  system            ping, version, info
  inspect NAME      the container NAME as listed and inspected
"""
import json
import sys

import docker
from docker.errors import APIError


def system(client):
    version = client.version()
    info = client.info()
    return {
        "ping": client.ping(),
        "api_version": client.api.api_version,
        "server_api": version["ApiVersion"],
        "os": version["Os"],
        "cgroup_version": info["CgroupVersion"],
        "containers": info["Containers"],
    }


def inspect(client, name):
    listed = [c.name for c in client.containers.list(all=True)]
    c = client.containers.get(name)
    return {
        "listed": listed,
        "id": c.id,
        "status": c.status,
        "path": c.attrs["Path"],
        "args": c.attrs["Args"],
        "ip": c.attrs["NetworkSettings"]["IPAddress"],
    }


FLOWS = {"system": system, "inspect": inspect}


def main():
    socket, flow, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    client = docker.DockerClient(base_url=f"unix://{socket}", version="auto", timeout=60)
    try:
        result = FLOWS[flow](client, *args)
    except APIError as e:
        result = {"error": e.status_code, "explanation": e.explanation}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
