"""A real OpenSSH server on the loopback for the remote-benchmark tests, and a target Python that cannot
import edgezoo.

:func:`start_sshd` runs ``/usr/sbin/sshd -D`` as the current user with a config, host key, client key
and ``authorized_keys`` of its own under a temporary folder, listening on 127.0.0.1 only
(``scripts/ensure_sshd.sh`` installs the server when it is missing). :func:`bare_python` makes a
venv without pip (no second copy of torch) that reaches this environment's packages through one ``.pth``
path line, edgezoo's left out (its editable finder is a ``.pth`` hook, and ``.pth`` files in a plain
path entry are never processed).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


@dataclass
class Sshd:
    proc: subprocess.Popen
    port: int
    user: str
    key: Path
    known_hosts: Path
    folder: Path

    @property
    def spec(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def ssh_options(self, key: Path | None = None) -> list[str]:
        """Options that use this server's keys and nothing of the user's ``~/.ssh``."""
        return ["-F", "/dev/null", "-i", str(key or self.key), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes"]

    def connection_pids(self) -> list[int]:
        """The sshd processes serving connections now (children of the listener)."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def stop(self) -> None:
        for pid in self.connection_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def start_sshd(folder: Path) -> Sshd:
    folder.mkdir(parents=True, exist_ok=True)
    host_key, key = keygen(folder / "host_key"), keygen(folder / "client_key")
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    sftp = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                             "/usr/libexec/sftp-server") if Path(p).exists()), "internal-sftp")
    config = folder / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", "UsePAM no", "StrictModes no",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password", f"Subsystem sftp {sftp}", "LogLevel ERROR", ""]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder (root only)
    port = free_port()
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config), "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=open(folder / "sshd.log", "w"))  # noqa: SIM115
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {(folder / 'sshd.log').read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("sshd did not listen within 10 s") from None
            time.sleep(0.05)
    host_pub = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    return Sshd(proc, port, getpass.getuser(), key, folder / "known_hosts", folder)


def bare_python(folder: Path, packages: tuple[str, ...] | None = None) -> Path:
    """A Python that never imports edgezoo; returns its interpreter.

    Its site-packages holds one ``.pth`` path line to a folder of links to this environment's packages:
    all of them but edgezoo's with ``packages`` ``None``, else only ``packages`` (list their dependencies
    too). ``.pth`` files in a plain path entry are never processed, so no hook of this environment runs.
    """
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(folder)],
                   check=True)
    py = folder / "bin" / "python"
    here = Path(sysconfig.get_paths()["purelib"])
    entry = folder / "host-packages"
    entry.mkdir()
    prefixes = tuple(f"{p}{sep}" for p in packages or () for sep in (".", "-"))
    for name in os.listdir(here):
        low = name.lower()
        if low.startswith(("edgezoo", "__editable__")):
            continue  # not even edgezoo's metadata: the target's fingerprint then lists no edgezoo version
        if packages is None or low in packages or low.startswith(prefixes):
            (entry / name).symlink_to(here / name)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "host-packages.pth").write_text(f"{entry}\n")
    return py
