"""Agent images for container mode, made without a registry.

The base image comes from a rootfs (`debootstrap --variant=minbase`) imported through the
Engine API (`POST /images/create?fromSrc=-`: aiodocker's `import_image` posts to
`/images/load`, the `docker save` format, which a rootfs tar is not). Each agent type's image
is then built (`POST /build`) from a Dockerfile shipped in `runtime/images/` with `FROM` the
base. `ensure_base` does nothing when the tag exists already: the import is done once.

Behind a proxy that inspects TLS (its own certificate authority), npm and pip in a build fail
with "self-signed certificate in certificate chain". `build(..., ca_bundle=PEM)` puts those
certificates in the build context (`ca/`); the real agents' Dockerfiles add them to the
image's trust store and point Node.js, pip and Python's ssl at it, at build and at run time.
Without one, `ca/` is empty and the images trust Debian's authorities only.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker

from fleet_core.errors import BadInputError, FleetError
from fleet_core.models import AgentType

BASE_TAG = "fleet-base:bookworm"
IMAGE_PREFIX = "fleet-agent-"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_TIMEOUT_S = 1800.0
IMAGES_DIR = Path(__file__).resolve().parent / "images"
PACKAGE_DIR = Path(__file__).resolve().parent.parent
Progress = Callable[[str], None]


class ImageError(FleetError):
    """An image could not be made (debootstrap, import or a build step failed)."""


@dataclass(frozen=True)
class ImageInfo:
    tag: str
    image_id: str
    size_mb: float
    created: str


def image_tag(agent: AgentType) -> str:
    return f"{IMAGE_PREFIX}{agent.value}:latest"


def dockerfile(agent: AgentType) -> Path:
    path = IMAGES_DIR / f"{agent.value}.Dockerfile"
    if not path.is_file():
        shipped = sorted(
            p.name.removesuffix(".Dockerfile") for p in IMAGES_DIR.glob("*.Dockerfile")
        )
        raise BadInputError(
            "agent", f"no Dockerfile is shipped for {agent.value}; shipped: {', '.join(shipped)}"
        )
    return path


async def exists(docker: aiodocker.Docker, tag: str) -> bool:
    try:
        await docker.images.inspect(tag)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def ensure_base(
    docker: aiodocker.Docker, tag: str = BASE_TAG, progress: Progress | None = None
) -> bool:
    """The base image under `tag`, debootstrapped and imported unless it exists. True when it
    was made now."""
    if await exists(docker, tag):
        return False
    say = progress or (lambda _line: None)
    if shutil.which("debootstrap") is None:
        raise ImageError(f"{tag} is missing and debootstrap is not installed to make it "
                         "(apt-get install debootstrap)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fleet-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        say(f"debootstrap bookworm into {rootfs} (a minute or two)")
        await _run(["debootstrap", "--variant=minbase", "--include=git,python3,ca-certificates",
                    "bookworm", str(rootfs), DEBIAN_MIRROR], DEBOOTSTRAP_TIMEOUT_S)  # fmt: skip
        say(f"importing {rootfs} as {tag}")
        await import_rootfs(docker, rootfs, tag)
    return True


async def import_rootfs(docker: aiodocker.Docker, rootfs: Path, tag: str) -> None:
    """A directory tree as a one-layer image (`POST /images/create?fromSrc=-`), the tar
    streamed from `tar` without a temporary file."""
    repo, _, version = tag.partition(":")
    proc = await asyncio.create_subprocess_exec(
        "tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", ".",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None

    async def body() -> AsyncIterator[bytes]:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(1 << 20):
            yield chunk

    params = {"fromSrc": "-", "repo": repo, "tag": version or "latest"}
    try:
        async with docker._query(  # aiodocker has no call for this endpoint
            "images/create", "POST", params=params, data=body(),
            headers={"Content-Type": "application/x-tar"}, chunked=True,
        ) as response:  # fmt: skip
            text = (await response.read()).decode(errors="replace")
    finally:
        if proc.returncode is None:
            await proc.wait()
    if proc.returncode != 0:
        err = (await proc.stderr.read()).decode(errors="replace") if proc.stderr else ""
        raise ImageError(f"tar of {rootfs} failed: {err.strip()}")
    if '"error"' in text:
        raise ImageError(f"import of {tag} failed: {text.strip()[-500:]}")


def read_ca_bundle(path: Path) -> bytes:
    """A PEM file of certificates to trust in builds; BadInputError naming `--ca-bundle`
    when it cannot be read or holds no certificate."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError("ca_bundle", f"cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise BadInputError("ca_bundle", f"{path} holds no PEM certificate")
    return data


def build_context(agent: AgentType, ca_bundle: bytes | None = None) -> io.BytesIO:
    """The build context in memory: the agent's Dockerfile, the `ca/` directory (the extra
    certificates, or empty) and, for the demo agent, the package's standard-library-only demo
    program."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(dockerfile(agent), arcname="Dockerfile")
        ca = tarfile.TarInfo("ca")
        ca.type, ca.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(ca)
        if ca_bundle is not None:
            _add_bytes(tar, "ca/fleet-extra.crt", ca_bundle)
        if agent is AgentType.DEMO:
            _add_bytes(tar, "fleet_core/__init__.py", b"")
            tar.add(PACKAGE_DIR / "demo_agent.py", arcname="fleet_core/demo_agent.py")
    buf.seek(0)
    return buf


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


async def build(
    docker: aiodocker.Docker,
    agent: AgentType,
    *,
    base: str = BASE_TAG,
    tag: str | None = None,
    progress: Progress | None = None,
    ca_bundle: bytes | None = None,
) -> str:
    """Build the agent type's image FROM `base` (which must exist), trusting `ca_bundle`'s
    certificates too (PEM); returns its tag."""
    tag = tag or image_tag(agent)
    if not await exists(docker, base):
        raise ImageError(f"base image {base} does not exist here (no registry is used): "
                         "build it first (`fleet image build` makes the default one)")  # fmt: skip
    say = progress or (lambda _line: None)
    stream = docker.images.build(
        fileobj=build_context(agent, ca_bundle), encoding="identity", tag=tag, forcerm=True,
        buildargs={"BASE": base}, stream=True,
    )  # fmt: skip
    try:
        async for item in stream:
            line = _line(item)
            if line:
                say(line)
    except aiodocker.DockerError as exc:
        raise ImageError(f"building {tag} failed: {exc.message}") from None
    return tag


def _line(item: Any) -> str:
    if not isinstance(item, dict):
        return ""
    if "error" in item:
        raise ImageError(str(item["error"]).strip())
    return str(item.get("stream") or item.get("status") or "").strip()


async def listing(docker: aiodocker.Docker) -> list[ImageInfo]:
    """fleet's images here: the base and the agents' images."""
    found: list[ImageInfo] = []
    for image in await docker.images.list():
        for tag in image.get("RepoTags") or []:
            if tag == BASE_TAG or tag.startswith(IMAGE_PREFIX) or tag.startswith("fleet-base"):
                found.append(ImageInfo(tag, str(image["Id"])[7:19],
                                       round(int(image.get("Size", 0)) / 1e6, 1),
                                       str(image.get("Created", ""))))  # fmt: skip
    return sorted(found, key=lambda i: i.tag)


async def _run(argv: list[str], timeout: float) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ImageError(f"{argv[0]} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise ImageError(f"{argv[0]} failed ({proc.returncode}): "
                         f"{out.decode(errors='replace')[-1000:]}")  # fmt: skip
