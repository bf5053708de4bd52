"""The container image (Dockerfile), built and run with a real engine: podman.

No container registry is reachable from the test machines, so the base image
debian:bookworm-slim is made here the way Debian makes it (debootstrap
--variant=minbase, then `podman import`) and kept in podman's store for the
next run. The Dockerfile itself is the one users build.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import conftest
from conftest import (ROOT, fetch, free_port, litestream_binary, missing, serving, totals,
                      wait_until)

IMAGE = "tally-test"
BASE = "debian:bookworm-slim"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
MAX_IMAGE_BYTES = 200 * 1000 * 1000


def podman_or_skip() -> str:
    podman = shutil.which("podman")
    if podman is None or os.geteuid() != 0:
        missing("podman is not installed, or not run as root",
                "podman (as root) is required in CI (.ci/run installs it)")
    return podman


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    """podman with this machine's two settings, and the base image."""
    program = podman_or_skip()
    folder = tmp_path_factory.mktemp("podman")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 1048576 if hard == resource.RLIM_INFINITY else hard
    conf = folder / "containers.conf"
    # Root may not raise its limits here, so containers get the current
    # ones; crun refuses this machine's hybrid cgroup set-up, runc works.
    conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={hard}:{hard}", "nproc=4096:4096"]\n'
                    f'[engine]\nruntime = "runc"\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def run(*args: str, check: bool = True, timeout: float = 600,
            stdin: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([program, *args], env=env, capture_output=True, text=True,
                                timeout=timeout, input=stdin)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {result.stderr[-2000:]}")
        return result

    if run("image", "exists", BASE, check=False).returncode != 0:
        debootstrap = shutil.which("debootstrap") or pytest.fail("debootstrap is required")
        rootfs = folder / "rootfs"
        subprocess.run([debootstrap, "--variant=minbase", "bookworm", str(rootfs),
                        "http://deb.debian.org/debian"], check=True, capture_output=True, timeout=900)
        slim(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run([program, "import", "-", BASE], stdin=tar.stdout, env=env, check=True,
                       capture_output=True, timeout=600)
        tar.wait()
        shutil.rmtree(rootfs)
    return run


# What makes Debian's official image "slim" (debuerreotype's slimify and its
# apt settings): dpkg leaves out documentation, manuals and translations, now
# and on every later install; apt keeps no downloaded packages, no binary
# caches and no translations; caches and lists are emptied.
SLIM_DPKG = """path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
"""


SLIM_APT = {
    "docker-clean": 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
                    '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
                    'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
                    '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
                    'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n',
    "docker-no-languages": 'Acquire::Languages "none";\n',
    "docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
}


def slim(rootfs: Path) -> None:
    (rootfs / "etc/dpkg/dpkg.cfg.d/docker").write_text(SLIM_DPKG)
    for name, text in SLIM_APT.items():
        (rootfs / "etc/apt/apt.conf.d" / name).write_text(text)
    for pattern in ("usr/share/doc/*", "usr/share/groff/*", "usr/share/info/*", "usr/share/linda/*",
                    "usr/share/lintian/overrides/*", "usr/share/locale/*", "usr/share/man/*",
                    "var/cache/apt/*", "var/lib/apt/lists/*"):
        for path in rootfs.glob(pattern):
            if path.parent.name == "doc" and (path / "copyright").exists():
                for inner in path.iterdir():
                    if inner.name != "copyright":
                        shutil.rmtree(inner) if inner.is_dir() else inner.unlink()
                continue
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


@pytest.fixture(scope="module")
def image(podman):
    extra = []
    if HOST_CA.exists():
        # This machine reaches PyPI through a proxy that re-signs TLS.
        extra = ["--volume", f"{HOST_CA}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    podman("build", "--format", "docker", *extra, "-t", IMAGE, str(ROOT), timeout=1200)
    yield IMAGE
    podman("rmi", "-f", IMAGE, check=False)


@pytest.fixture
def container(podman, image):
    name, volume, port = f"tally-test-{os.getpid()}", f"tally-test-data-{os.getpid()}", free_port()
    podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "-v", f"{volume}:/data", image)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: serving(url), timeout=60)
    yield name, url
    podman("rm", "-f", name, check=False)
    podman("volume", "rm", "-f", volume, check=False)


def get(url: str) -> bytes:
    status, _, body = fetch(url)
    assert status == 200, (url, status)
    return body


def replicated(replica: Path, tmp_path: Path, page_id: str) -> int | None:
    """The page's total in a restore of a Litestream folder replica (None:
    nothing replicated yet), restored by the host's own Litestream."""
    into = tempfile.mktemp(suffix=".db", dir=tmp_path)
    restored = subprocess.run([litestream_binary(), "restore", "-o", into, f"file://{replica}"],
                              capture_output=True, timeout=120)
    return totals(into).get(page_id) if restored.returncode == 0 else None


def test_the_image_is_small_and_has_no_compiler(podman, image):
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    assert size < MAX_IMAGE_BYTES, f"{size / 1e6:.0f} MB"
    probe = podman("run", "--rm", "--entrypoint", "sh", image, "-c",
                   "command -v gcc cc make pip3 || true; ls /root/.cache 2>/dev/null || true").stdout
    assert probe.strip() == ""
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "tally" and "/data" in config["Volumes"]
    assert config["StopSignal"] == "SIGTERM" and config["ExposedPorts"] == {"8080/tcp": {}}
    assert "/healthz" in " ".join(inspected["Healthcheck"]["Test"])


def test_counts_survive_a_stop_and_start_and_the_owner_commands_work(podman, container, tmp_path):
    name, url = container
    for expected in (1, 2, 3):
        assert f">{expected}</text></g></svg>".encode() in get(url + "/badge?page_id=ctr")
    # The server runs as the image's user, not root.
    status = podman("exec", name, "cat", "/proc/1/status").stdout
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert uid == "10001"
    assert podman("healthcheck", "run", name).returncode == 0

    # The owner's commands through exec, and a backup copied out of the volume.
    podman("exec", name, "python", "server.py", "backup", "/data/backups/")
    backups = podman("exec", name, "ls", "/data/backups").stdout.split()
    assert len(backups) == 1 and backups[0].startswith("counts-")
    podman("cp", f"{name}:/data/backups/{backups[0]}", str(tmp_path / "copy.db"))
    with sqlite3.connect(tmp_path / "copy.db") as conn:
        assert conn.execute("SELECT total FROM pages WHERE page_id = 'ctr'").fetchone() == (3,)
    exported = json.loads(podman("exec", name, "python", "server.py", "export").stdout)
    assert any(page["page_id"] == "ctr" and page["total"] == 3 for page in exported["pages"])
    podman("exec", "-i", name, "python", "server.py", "import", "-",
           stdin="page_id,count\nimported,42\n")
    assert json.loads(get(url + "/api/count?page_id=imported"))["total"] == 42

    # SIGTERM ends it: a container that ignored it would be killed after
    # podman's 10 s, with exit code 137.
    podman("stop", "--time", "10", name)
    assert podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0"

    podman("start", name)
    wait_until(lambda: serving(url), timeout=60)
    assert json.loads(get(url + "/api/count?page_id=ctr"))["total"] == 3
    assert b">4</text></g></svg>" in get(url + "/badge?page_id=ctr")

    # restore refuses beside a running server; with it stopped, a one-off
    # container puts the copied backup (taken before the import) back.
    podman("stop", name)
    tmp_path.chmod(0o755)
    (tmp_path / "copy.db").chmod(0o644)
    volume = json.loads(podman("inspect", name).stdout)[0]["Mounts"][0]["Name"]
    podman("run", "--rm", "-v", f"{volume}:/data", "-v", f"{tmp_path}:/backup:ro", IMAGE,
           "python", "server.py", "restore", "/backup/copy.db")
    podman("start", name)
    wait_until(lambda: serving(url), timeout=60)
    assert json.loads(get(url + "/api/count?page_id=ctr"))["total"] == 3
    assert json.loads(get(url + "/api/count?page_id=imported"))["total"] == 0


def test_two_containers_count_into_one_postgresql(podman, image):
    # compose.postgres.yaml's shape: two servers of the image, one database
    # (the tests' own PostgreSQL, reached through its socket folder).
    url = conftest.fresh_postgres()
    folder = os.environ["TALLY_TEST_POSTGRES_DIR"]
    names, bases = [], []
    try:
        for n in (1, 2):
            name, port = f"tally-test-pg{n}-{os.getpid()}", free_port()
            podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
                   "-v", f"{folder}:{folder}", "-e", f"TALLY_DB={url}",
                   # counted exactly under a loop: the guard off (conftest.GUARD_OFF)
                   "-e", "TALLY_GUARD=0", image)
            names.append(name)
            bases.append(f"http://127.0.0.1:{port}")
        for base in bases:
            wait_until(lambda: serving(base), timeout=60)

        def view(n: int) -> int:
            body = get(bases[n % 2] + "/badge?page_id=shared").decode()
            return int(body.rsplit("</text>", 2)[-2].rsplit(">", 1)[-1])
        with ThreadPoolExecutor(16) as pool:
            totals = sorted(pool.map(view, range(400)))
        assert totals == list(range(1, 401))
        for base in bases:
            assert json.loads(get(base + "/api/count?page_id=shared"))["total"] == 400
    finally:
        for name in names:
            # pytest shows this only when the test fails: the servers' own account.
            logs = podman("logs", name, check=False)
            print(name, (logs.stdout + logs.stderr)[-4000:])
            podman("rm", "-f", name, check=False)


def test_an_image_built_with_litestream_restores_a_new_volume_from_its_replica(podman, tmp_path):
    """--build-arg LITESTREAM=1 and LITESTREAM_REPLICA_URL (docs/replication.md):
    counts made in one container come back in a new one with an empty volume."""
    image = IMAGE + "-litestream"
    extra = []
    if HOST_CA.exists():
        extra = ["--volume", f"{HOST_CA}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    podman("build", "--format", "docker", *extra, "--build-arg", "LITESTREAM=1", "-t", image,
           str(ROOT), timeout=1200)
    replica = tmp_path / "replica"
    replica.mkdir()
    os.chown(replica, 10001, 10001)  # the image's user
    names = []
    try:
        for n, expected in ((1, 0), (2, 9)):
            name, port = f"tally-test-ls{n}-{os.getpid()}", free_port()
            names.append(name)
            podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
                   "-v", f"tally-test-ls{n}-{os.getpid()}:/data", "-v", f"{replica}:/replica",
                   "-e", "LITESTREAM_REPLICA_URL=file:///replica", image)
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: serving(url), timeout=60)
            assert json.loads(get(url + "/api/count?page_id=p"))["total"] == expected
            if n == 1:
                for _ in range(9):
                    get(url + "/badge?page_id=p")
                wait_until(lambda: replicated(replica, tmp_path, "p") == 9, timeout=120)
                podman("stop", name)
                assert podman("inspect", "--format", "{{.State.ExitCode}}",
                              name).stdout.strip() == "0"
    finally:
        for n, name in enumerate(names, 1):
            podman("rm", "-f", name, check=False)
            podman("volume", "rm", "-f", f"tally-test-ls{n}-{os.getpid()}", check=False)
        podman("rmi", "-f", image, check=False)
