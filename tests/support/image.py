"""A tiny test image made from Debian's busybox-static and `docker import`: no registry needed."""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import tarfile
from pathlib import Path

from .cli import DockerCLI
from .procs import SupportError

BUSYBOX = Path("/bin/busybox")
LABEL = "logbridge.busybox.sha256"
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\n"


def is_static_elf(path: Path) -> bool:
    """True if `path` is an ELF executable without a program interpreter (statically linked)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only: that is what Debian ships here
            return False
        order = "<" if head[5] == 1 else ">"
        (phoff,) = struct.unpack_from(order + "Q", head, 0x20)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(struct.unpack_from(order + "I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def _add(
    tar: tarfile.TarFile,
    name: str,
    *,
    data: bytes | None = None,
    mode: int = 0o644,
    link: str | None = None,
    directory: bool = False,
) -> None:
    info = tarfile.TarInfo(name)
    info.uid = info.gid = 0
    info.mode = mode
    if directory:
        info.type = tarfile.DIRTYPE
    elif link is not None:
        info.type = tarfile.SYMTYPE
        info.linkname = link
    else:
        info.size = len(data or b"")
    tar.addfile(info, io.BytesIO(data) if data else None)


def busybox_tar(busybox: Path = BUSYBOX) -> bytes:
    """A root filesystem: /bin/busybox, one symlink per applet, /etc/passwd, /etc/group, /tmp."""
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, check=True).stdout.decode().split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "dev", "proc", "sys", "root"):
            _add(tar, d, directory=True, mode=0o755)
        _add(tar, "tmp", directory=True, mode=0o1777)
        _add(tar, "bin/busybox", data=busybox.read_bytes(), mode=0o755)
        for applet in applets:
            if applet != "busybox":
                _add(tar, f"bin/{applet}", link="busybox")
        _add(tar, "etc/passwd", data=PASSWD)
        _add(tar, "etc/group", data=GROUP)
    return buf.getvalue()


def import_busybox(dockerd: DockerCLI, tag: str = "bb:latest", busybox: Path = BUSYBOX) -> str:
    """Make `tag` on `dockerd` from the host's static busybox (idempotent: a label holds the binary's
    sha256). Returns the tag."""
    if not busybox.exists() or not is_static_elf(busybox):
        raise SupportError(
            f"{busybox} is missing or not statically linked: run scripts/install-deps.sh"
            " (Debian package busybox-static)"
        )
    digest = hashlib.sha256(busybox.read_bytes()).hexdigest()
    probe = dockerd.docker("image", "inspect", "-f", f'{{{{index .Config.Labels "{LABEL}"}}}}', tag, check=False)
    if probe.returncode == 0 and probe.stdout.decode().strip() == digest:
        return tag
    dockerd.docker(
        "import",
        "--change",
        "ENV PATH=/bin",
        "--change",
        'CMD ["sh"]',
        "--change",
        f"LABEL {LABEL}={digest}",
        "-",
        tag,
        input=busybox_tar(busybox),
    )
    return tag
