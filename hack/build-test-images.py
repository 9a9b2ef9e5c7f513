#!/usr/bin/env python3
"""Builds berth's test images as OCI image layouts, with no container engine.

    python3 hack/build-test-images.py OUTDIR

Writes one OCI image layout per image (OUTDIR/<name>/{oci-layout,index.json,
blobs/sha256/...}) and OUTDIR/images.json with each image's digests. Every
byte is deterministic (fixed mtimes and owners, entries in a fixed order,
gzip mtime 0, seeded pseudo-random data), so a rebuild gives the same
digests. Work is skipped when OUTDIR/.stamp matches the hash of this script
and of /bin/busybox (the one input taken from the host).

Needs python3 (stdlib only), /bin/busybox (busybox-static) and the zstd CLI
(for the `zstd` image). Push the result with hack/push-test-images.sh.
"""

import gzip
import hashlib
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor

BUSYBOX = "/bin/busybox"
EPOCH = 1704067200  # 2024-01-01T00:00:00Z, every mtime in every layer
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GZIP_LEVEL = 6
ZSTD_LEVEL = 3

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"
TAG = "latest"

# Applets linked into /bin of the busybox layer (all -> "busybox").
APPLETS = sorted(
    """sh ls cat echo sleep true false id wget httpd nc env ps
    mkdir rm touch cp mv ln chmod grep head tail wc sort tee stat readlink
    hostname uname kill printf test pwd date dd mount umount ip ping stty""".split()
)

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
)
GROUP = "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"


def host_arch():
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(m, m)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


# ---------------------------------------------------------------- layer tars

class Tar:
    """An in-memory tar with fixed metadata; entries stay in the order added."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.USTAR_FORMAT)

    def _info(self, name, kind, mode, uid, gid):
        # A raw TarInfo: tarfile writes the name as given (no "/" stripping,
        # no ".." checks), which the evil layers rely on.
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = EPOCH
        return ti

    def dir(self, name, mode=0o755, uid=0, gid=0):
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid))
        return self

    def file(self, name, data, mode=0o644, uid=0, gid=0):
        if isinstance(data, str):
            data = data.encode()
        ti = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))
        return self

    def symlink(self, name, target):
        ti = self._info(name, tarfile.SYMTYPE, 0o777, 0, 0)
        ti.linkname = target
        self.tar.addfile(ti)
        return self

    def hardlink(self, name, target):
        ti = self._info(name, tarfile.LNKTYPE, 0o644, 0, 0)
        ti.linkname = target
        self.tar.addfile(ti)
        return self

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


class Layer:
    """An uncompressed layer tar and its blob in one compression."""

    def __init__(self, tar_bytes, compression="gzip"):
        self.diff_id = sha256(tar_bytes)
        if compression == "gzip":
            # mtime=0 and no file name: the gzip header carries nothing variable.
            self.blob = gzip.compress(tar_bytes, compresslevel=GZIP_LEVEL, mtime=0)
            self.media_type = MT_LAYER + "+gzip"
        elif compression == "zstd":
            self.blob = subprocess.run(
                ["zstd", "-q", "-c", "-T1", f"-{ZSTD_LEVEL}", "--no-progress"],
                input=tar_bytes, stdout=subprocess.PIPE, check=True).stdout
            self.media_type = MT_LAYER + "+zstd"
        elif compression == "none":
            self.blob = tar_bytes
            self.media_type = MT_LAYER
        else:
            raise ValueError(compression)
        self.digest = sha256(self.blob)
        self.uncompressed_size = len(tar_bytes)


def busybox_tar():
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    entries = {  # path -> writer; written in sorted path order
        "bin": lambda t: t.dir("bin"),
        "bin/busybox": lambda t: t.file("bin/busybox", busybox, mode=0o755),
        "dev": lambda t: t.dir("dev"),
        "etc": lambda t: t.dir("etc"),
        "etc/group": lambda t: t.file("etc/group", GROUP),
        "etc/passwd": lambda t: t.file("etc/passwd", PASSWD),
        "home": lambda t: t.dir("home"),
        "home/app": lambda t: t.dir("home/app", uid=1000, gid=1000),
        "proc": lambda t: t.dir("proc", mode=0o555),
        "root": lambda t: t.dir("root", mode=0o700),
        "sys": lambda t: t.dir("sys", mode=0o555),
        "tmp": lambda t: t.dir("tmp", mode=0o1777),
        "var": lambda t: t.dir("var"),
    }
    for a in APPLETS:
        entries["bin/" + a] = lambda t, a=a: t.symlink("bin/" + a, "busybox")
    t = Tar()
    for path in sorted(entries):
        entries[path](t)
    return t.bytes()


def layered_tars():
    l2 = (Tar().dir("data")
          .file("data/gone.txt", "gone\n")
          .file("data/keep.txt", "keep\n")
          .dir("opaque")
          .file("opaque/old1.txt", "old1\n")
          .file("opaque/old2.txt", "old2\n")
          .bytes())
    # The hardlink follows its target; the opaque marker leads its directory.
    l3 = (Tar().dir("data")
          .file("data/.wh.gone.txt", b"")
          .file("data/keep2.txt", "keep2\n")
          .hardlink("data/hard", "data/keep2.txt")
          .dir("opaque")
          .file("opaque/.wh..wh..opq", b"")
          .file("opaque/new.txt", "new\n")
          .bytes())
    return l2, l3


def bench_tar(index, files=200, file_size=128 * 1024, block=4096):
    """~25 MiB of semi-compressible files: 4 KiB blocks, about half random
    bytes and half log-like text, from a seed fixed per layer."""
    rng = random.Random(f"berth-bench-layer-{index}")
    words = ("pod container sandbox image layer snapshot mount cgroup pull "
             "push digest manifest config registry runtime kubelet").split()
    t = Tar().dir("bench").dir(f"bench/layer{index}")
    for n in range(files):
        parts = []
        for _ in range(file_size // block):
            if rng.random() < 0.55:
                parts.append(rng.randbytes(block))
            else:
                line = (f"{rng.randrange(1 << 30):010d} level=info msg=\""
                        + " ".join(rng.choice(words) for _ in range(8)) + "\"\n")
                text = (line * (block // len(line) + 1))[:block]
                parts.append(text.encode())
        t.file(f"bench/layer{index}/file-{n:04d}.bin", b"".join(parts))
    return t.bytes()


def tar_with(*entries):
    t = Tar()
    for e in entries:
        e(t)
    return t.bytes()


# ---------------------------------------------------------------- layouts

class Layout:
    """One OCI image layout directory."""

    def __init__(self, root):
        self.root = root
        if os.path.exists(root):
            shutil.rmtree(root)
        os.makedirs(os.path.join(root, "blobs", "sha256"))
        self.blob_bytes = 0

    def blob(self, data, media_type):
        digest = sha256(data)
        path = os.path.join(self.root, "blobs", "sha256", digest[7:])
        if not os.path.exists(path):
            write_file(path, data)
            self.blob_bytes += len(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def image(self, name, layers, arch, variant=None, config_extra=None):
        """Writes the config and manifest; returns (manifest descriptor,
        config digest)."""
        cfg = {"Env": [PATH_ENV], "Cmd": ["sh"],
               "Labels": {"org.berth.test.image": name}}
        cfg.update(config_extra or {})
        config = {"created": CREATED, "architecture": arch}
        if variant:
            config["variant"] = variant
        config.update({
            "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in layers]},
            "history": [{"created": CREATED,
                         "created_by": f"hack/build-test-images.py: {name} layer {i + 1}"}
                        for i in range(len(layers))],
        })
        config_desc = self.blob(canonical_json(config), MT_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": config_desc,
            "layers": [self.blob(l.blob, l.media_type) for l in layers],
        }
        desc = self.blob(canonical_json(manifest), MT_MANIFEST)
        return desc, config_desc["digest"]

    def finish(self, top):
        """Writes index.json naming `top` (a manifest or an index) as :latest."""
        top = dict(top, annotations={REF_NAME: TAG})
        write_file(os.path.join(self.root, "oci-layout"),
                   canonical_json({"imageLayoutVersion": "1.0.0"}))
        write_file(os.path.join(self.root, "index.json"), canonical_json(
            {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [top]}))


def write_file(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------- images

def build(outdir):
    arch = host_arch()
    bb_tar = busybox_tar()
    bb_gz = Layer(bb_tar)
    images = {}

    def single(name, layers, config_extra=None):
        lay = Layout(os.path.join(outdir, name))
        desc, config_digest = lay.image(name, layers, arch, config_extra=config_extra)
        lay.finish(desc)
        images[name] = {"ref_tag": TAG, "all": False,
                        "manifest_digest": desc["digest"],
                        "config_digest": config_digest, "layers": len(layers),
                        "blob_bytes": lay.blob_bytes,
                        "uncompressed_bytes": sum(l.uncompressed_size for l in layers)}

    single("busybox", [bb_gz])

    l2, l3 = layered_tars()
    single("layered", [bb_gz, Layer(l2), Layer(l3)])

    # multiarch: an index of linux/amd64 and linux/arm64/v8.
    lay = Layout(os.path.join(outdir, "multiarch"))
    entries, amd64_config = [], None
    for a, variant in (("amd64", None), ("arm64", "v8")):
        arch_layer = Layer(tar_with(lambda t: t.dir("etc"),
                                    lambda t, a=a: t.file("etc/arch", a + "\n")))
        desc, cfg = lay.image("multiarch", [bb_gz, arch_layer], a, variant=variant)
        plat = {"architecture": a, "os": "linux"}
        if variant:
            plat["variant"] = variant
        entries.append(dict(desc, platform=plat))
        if a == "amd64":
            amd64_config = cfg
    index = lay.blob(canonical_json(
        {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": entries}), MT_INDEX)
    lay.finish(index)
    images["multiarch"] = {"ref_tag": TAG, "all": True,
                           "manifest_digest": index["digest"],
                           "config_digest": amd64_config, "layers": 2,
                           "blob_bytes": lay.blob_bytes,
                           "uncompressed_bytes": bb_gz.uncompressed_size + arch_layer.uncompressed_size}

    single("nonroot", [bb_gz], {"User": "1000:1000", "WorkingDir": "/home/app"})
    # groups: the image's /etc/group puts app (uid 1000) in a group of its
    # own, as critest's "predefined group" image does (SupplementalGroupsPolicy).
    single("groups", [bb_gz, Layer(tar_with(
        lambda t: t.dir("etc"),
        lambda t: t.file("etc/group", GROUP + "group-defined-in-image:x:50000:app\n")))])
    single("stopsignal", [bb_gz], {"StopSignal": "SIGUSR1"})
    # pause: a sandbox image for containerd's CRI in the pod benchmark (no
    # real pause image offline); PID 1 sleeps until killed, as pause does.
    single("pause", [bb_gz], {"Cmd": ["/bin/sleep", "2147483647"]})
    single("zstd", [Layer(bb_tar, "zstd")])
    single("uncompressed", [Layer(bb_tar, "none")])

    single("evil-dotdot", [bb_gz, Layer(tar_with(
        lambda t: t.file("../../escaped-dotdot", "escaped\n")))])
    single("evil-symlink", [bb_gz, Layer(tar_with(
        lambda t: t.symlink("link", "/tmp"),
        lambda t: t.file("link/escaped-symlink", "escaped\n")))])
    single("evil-abs", [bb_gz, Layer(tar_with(
        lambda t: t.file("/escaped-abs", "escaped\n")))])

    # bench: generation and gzip of the four big layers in parallel (zlib
    # and the randbytes-heavy part release the GIL often enough to help).
    with ThreadPoolExecutor(max_workers=4) as pool:
        big = list(pool.map(lambda i: Layer(bench_tar(i)), range(1, 5)))
    single("bench", [bb_gz] + big)

    return images


def stamp_of():
    h = hashlib.sha256()
    with open(os.path.abspath(__file__), "rb") as f:
        h.update(f.read())
    with open(BUSYBOX, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR")
    outdir = os.path.abspath(sys.argv[1])
    os.makedirs(outdir, exist_ok=True)
    stamp_path = os.path.join(outdir, ".stamp")
    want = stamp_of()
    try:
        with open(stamp_path) as f:
            have = f.read().strip()
    except FileNotFoundError:
        have = None
    if have == want and os.path.exists(os.path.join(outdir, "images.json")):
        return
    if have is not None:
        os.remove(stamp_path)  # a half-done rebuild must not look finished
    images = build(outdir)
    write_file(os.path.join(outdir, "images.json"),
               json.dumps(images, indent=2, sort_keys=True).encode() + b"\n")
    write_file(stamp_path, (want + "\n").encode())
    print(f"built {len(images)} test images in {outdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
