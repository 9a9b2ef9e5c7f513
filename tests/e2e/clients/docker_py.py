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
  pull IMAGE        pulls IMAGE; its id and tags
  image IMAGE       the local image IMAGE's id
  create IMAGE      creates (never pulls) a container of IMAGE; removes it
  run IMAGE         runs a command writing to both streams and exiting 3,
                    detached; its wait status and each stream's logs; removes it
  start IMAGE NAME  runs NAME detached: a shell that ignores SIGTERM
  exec NAME         exec_run in NAME: exit codes, output, env, workdir, user
  stop NAME         stop(timeout=1) of NAME, then remove()
  volume IMAGE      a labelled volume shared by two containers, listed by
                    label, refused while in use, then removed
  volume_options IMAGE
                    a tmpfs volume of the local driver's options and tmpfs
                    mounts (Mount type tmpfs, tmpfs=): their mount lines;
                    a bad option refused; list filters; prune
"""
import json
import sys
import time

import docker
from docker.errors import APIError

# Keeps running until SIGKILL: `docker stop` must escalate.
IGNORES_TERM = "trap '' TERM; while true; do sleep 0.2; done"


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


def pull(client, image):
    pulled = client.images.pull(image)
    return {"id": pulled.id, "tags": pulled.tags}


def image(client, name):
    return {"id": client.images.get(name).id}


def create(client, image):
    c = client.containers.create(image, "true")
    result = {"id": c.id, "status": c.status}
    c.remove()
    return result


def run(client, image):
    c = client.containers.run(image, "sh -c 'echo out; echo err >&2; exit 3'", detach=True)
    waited = c.wait(timeout=60)
    result = {
        "wait": waited,
        "stdout": c.logs(stdout=True, stderr=False).decode(),
        "stderr": c.logs(stdout=False, stderr=True).decode(),
        "both": c.logs().decode(),
    }
    c.remove()
    return result


def start(client, image, name):
    c = client.containers.run(image, ["sh", "-c", IGNORES_TERM], detach=True, name=name)
    c.reload()
    return {"id": c.id, "status": c.status}


def exec_(client, name):
    c = client.containers.get(name)

    def ran(*args, **kwargs):
        code, out = c.exec_run(*args, **kwargs)
        return {"code": code, "output": out.decode()}

    split = c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 7"], demux=True)
    return {
        "plain": ran("echo hello"),
        "failing": ran(["sh", "-c", "exit 4"]),
        "split": {
            "code": split.exit_code,
            "stdout": split.output[0].decode(),
            "stderr": split.output[1].decode(),
        },
        "options": ran(
            ["sh", "-c", 'echo "$A $B"; pwd; id -u; id -g'],
            environment={"A": "1", "B": "two words"},
            workdir="/tmp",
            user="1000:50",
        ),
        "by_name": ran(["sh", "-c", "id -un; id -g"], user="app"),
        "env_list": ran(["sh", "-c", "echo $PATH"], environment=["PATH=/bin"]),
    }


def stop(client, name):
    c = client.containers.get(name)
    began = time.monotonic()
    c.stop(timeout=1)
    took = time.monotonic() - began
    c.reload()
    result = {
        "took": took,
        "status": c.status,
        "exit_code": c.attrs["State"]["ExitCode"],
    }
    c.remove()
    return result


def volume(client, image):
    vol = client.volumes.create("pyvol", labels={"flow": "volume"})
    mount = {"pyvol": {"bind": "/v", "mode": "rw"}}
    client.containers.run(image, "sh -c 'echo shared > /v/f'", volumes=mount, remove=True)
    read = client.containers.run(
        image, "cat /v/f", volumes={"pyvol": {"bind": "/v", "mode": "ro"}}, remove=True
    )
    holder = client.containers.run(image, "sleep 600", volumes=mount, detach=True)
    try:
        vol.remove()
        in_use = None
    except APIError as e:
        in_use = {"status": e.status_code, "explanation": e.explanation}
    holder.remove(force=True)
    labelled = [v.name for v in client.volumes.list(filters={"label": "flow=volume"})]
    vol.reload()
    attrs = vol.attrs
    vol.remove()
    return {
        "read": read.decode(),
        "in_use": in_use,
        "holder": holder.id,
        "labelled": labelled,
        "driver": attrs["Driver"],
        "mountpoint": attrs["Mountpoint"],
        "left": [v.name for v in client.volumes.list()],
    }


def refusal(call):
    try:
        call()
        return None
    except APIError as e:
        return {"status": e.status_code, "explanation": e.explanation}


def volume_options(client, image):
    opts = {"type": "tmpfs", "device": "tmpfs", "o": "size=16m"}
    vol = client.volumes.create("pytmp", driver="local", driver_opts=opts, labels={"flow": "opts"})
    in_volume = client.containers.run(
        image, "grep ' /t ' /proc/mounts", volumes={"pytmp": {"bind": "/t", "mode": "rw"}}, remove=True
    )
    tmpfs_mount = docker.types.Mount("/m", None, type="tmpfs", tmpfs_size=1 << 20, tmpfs_mode=0o1770)
    mounted = client.containers.run(
        image, "grep ' /m ' /proc/mounts", mounts=[tmpfs_mount], remove=True
    )
    tmpfs_param = client.containers.run(
        image, "grep ' /s ' /proc/mounts", tmpfs={"/s": "size=2m"}, remove=True
    )
    bad = refusal(lambda: client.volumes.create("pybad", driver_opts={"colour": "red"}))
    client.volumes.create("pyspare")
    holder = client.containers.run(
        image, "sleep 600", volumes={"pytmp": {"bind": "/t", "mode": "rw"}}, detach=True
    )
    names = lambda **f: sorted(v.name for v in client.volumes.list(filters=f))
    listed = {
        "name": names(name="pyt"),
        "dangling": names(dangling=True),
        "in_use": names(dangling=False),
        "label": names(label="flow=opts"),
        "driver": names(driver="local"),
    }
    pruned = client.volumes.prune()
    holder.remove(force=True)
    vol.reload()
    attrs = vol.attrs
    vol.remove()
    return {
        "options": attrs["Options"],
        "in_volume": in_volume.decode(),
        "mounted": mounted.decode(),
        "tmpfs_param": tmpfs_param.decode(),
        "bad": bad,
        "listed": listed,
        "pruned": pruned["VolumesDeleted"],
        "left": [v.name for v in client.volumes.list()],
    }


def network(client, image, subnet):
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
    net = client.networks.create("pynet", driver="bridge", ipam=ipam, labels={"flow": "network"})
    c = client.containers.run(image, "sleep 600", detach=True, name="pysleeper")
    net.connect(c, aliases=["pyalias"])
    net.reload()
    c.reload()
    members = {
        cid: {"name": m["Name"], "ipv4": m["IPv4Address"]}
        for cid, m in net.attrs["Containers"].items()
    }
    endpoint = c.attrs["NetworkSettings"]["Networks"].get("pynet", {})
    eth1 = c.exec_run("ip -o -4 addr show eth1").output.decode()
    try:
        net.remove()
        in_use = None
    except APIError as e:
        in_use = {"status": e.status_code, "explanation": e.explanation}
    net.disconnect(c)
    c.reload()
    after = list(c.attrs["NetworkSettings"]["Networks"].keys())
    c.remove(force=True)
    labelled = [n.name for n in client.networks.list(filters={"label": "flow=network"})]
    net.remove()
    return {
        "id": net.id,
        "subnet": net.attrs["IPAM"]["Config"][0]["Subnet"],
        "members": members,
        "container": c.id,
        "ip": endpoint.get("IPAddress"),
        "aliases": endpoint.get("Aliases"),
        "network_id": endpoint.get("NetworkID"),
        "eth1": eth1,
        "in_use": in_use,
        "after": after,
        "labelled": labelled,
        "left": sorted(n.name for n in client.networks.list()),
    }


FLOWS = {
    "network": network,
    "volume": volume,
    "volume_options": volume_options,
    "system": system,
    "inspect": inspect,
    "pull": pull,
    "image": image,
    "create": create,
    "run": run,
    "start": start,
    "exec": exec_,
    "stop": stop,
}


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
