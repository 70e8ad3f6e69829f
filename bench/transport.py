"""How the host reaches a target: the system ``ssh``/``scp`` (so ``~/.ssh/config``, keys, agents and jump
hosts work as they do for the user; ``BatchMode=yes``: nothing ever prompts) or ``adb``.

Every failure the user can fix is a :class:`RemoteError` with one line: host unreachable,
authentication refused, host key unknown, no space in the work folder, a connection lost mid-run.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from edgezoo.bench.targets import Target
from edgezoo.errors import EdgezooError

__all__ = ["RemoteError", "Transport", "connect"]

#: seconds ssh waits for the TCP connection (an unreachable host fails in this time, not the OS's minutes)
CONNECT_TIMEOUT = 10

_UNREACHABLE = ("connection refused", "could not resolve hostname", "no route to host", "connection timed out",
                "network is unreachable", "operation timed out", "name or service not known")
_AUTH = ("permission denied", "too many authentication failures", "no supported authentication methods")
_LOST = ("connection closed", "connection reset", "broken pipe", "closed by remote host", "killed by signal",
         "client_loop: send disconnect")


class RemoteError(EdgezooError, RuntimeError):
    """A target that cannot be reached or used (one line, exit status 2 from the CLI)."""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


class Transport:
    """Commands on a target and files to and from its work folder."""

    def __init__(self, target: Target) -> None:
        self.target = target

    # what each transport spells differently
    def shell_argv(self, command: str) -> list[str]:
        raise NotImplementedError

    def push_argv(self, files: Sequence[Path], remote_dir: str) -> list[str]:
        raise NotImplementedError

    def pull_argv(self, remote: str, local: Path) -> list[str]:
        raise NotImplementedError

    def classify(self, stderr: str, rc: int, what: str, shell: bool) -> RemoteError | None:
        """The one-line error a failed transport command means, or ``None`` when the transport itself worked
        (``shell``: a command run in the target's shell, whose own exit status passes through)."""
        raise NotImplementedError

    # shared
    def _raise_for(self, proc: subprocess.CompletedProcess, what: str, shell: bool = True) -> None:
        err = self.classify(proc.stderr or "", proc.returncode, what, shell) if proc.returncode else None
        if err is not None:
            raise err

    def run(self, command: str, what: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``command`` in the target's shell; a transport failure raises, the command's own exit status
        is returned (``check``: a non-zero one raises too, with its last stderr line)."""
        try:
            proc = subprocess.run(self.shell_argv(command), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.target.spec}: {what} took over {timeout:.0f} s: is the target alive?") from None
        self._raise_for(proc, what)
        if check and proc.returncode != 0:
            raise RemoteError(f"{self.target.spec}: {what} failed (exit {proc.returncode}): "
                              f"{_last_line(proc.stderr) or _last_line(proc.stdout)}")
        return proc

    def push(self, files: Sequence[Path], remote_dir: str) -> None:
        proc = subprocess.run(self.push_argv(files, remote_dir), capture_output=True, text=True)
        self._raise_for(proc, "copying files", shell=False)
        if proc.returncode != 0:
            raise RemoteError(f"{self.target.spec}: copying to {remote_dir} failed: {_last_line(proc.stderr)}")

    def pull(self, remote: str, local: Path) -> None:
        proc = subprocess.run(self.pull_argv(remote, local), capture_output=True, text=True)
        self._raise_for(proc, "copying files back", shell=False)
        if proc.returncode != 0:
            raise RemoteError(f"{self.target.spec}: copying {remote} back failed: {_last_line(proc.stderr)}")

    def stream(self, command: str) -> Iterator[str]:
        """The lines ``command`` prints, as they come; when it ends, ``self.ended`` holds (rc, stderr)."""
        proc = subprocess.Popen(self.shell_argv(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                bufsize=1)
        self.proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        yield from proc.stdout
        rc = proc.wait()
        self.ended = (rc, proc.stderr.read())

    def free_bytes(self, folder: str) -> int | None:
        """Bytes free in ``folder`` on the target (``df``), ``None`` where ``df`` says nothing readable."""
        q = shlex.quote(folder)
        proc = self.run(f"df -Pk {q} 2>/dev/null || df -k {q}", "reading free space", check=False)
        rows = [ln.split() for ln in proc.stdout.strip().splitlines()[1:]]
        fields = [f for row in rows for f in row]
        # POSIX: filesystem, 1024-blocks, used, available, capacity, mount (one row; a long name may wrap)
        nums = [f for f in fields if f.isdigit()]
        return int(nums[2]) * 1024 if len(nums) >= 3 else None


class SshTransport(Transport):
    def _options(self, port_flag: str) -> list[str]:
        t = self.target
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "ServerAliveInterval=15",
                "-o", "ServerAliveCountMax=4"]
        if t.port:
            opts += [port_flag, str(t.port)]
        return opts + [str(Path(o).expanduser()) if o.startswith("~") else o for o in t.ssh_options]

    def shell_argv(self, command: str) -> list[str]:
        host = self.target.host.replace("[", "").replace("]", "")
        return ["ssh", *self._options("-p"), host, command]

    def push_argv(self, files: Sequence[Path], remote_dir: str) -> list[str]:
        return ["scp", "-q", *self._options("-P"), *map(str, files), f"{self.target.host}:{remote_dir}/"]

    def pull_argv(self, remote: str, local: Path) -> list[str]:
        return ["scp", "-q", *self._options("-P"), f"{self.target.host}:{remote}", str(local)]

    def classify(self, stderr: str, rc: int, what: str, shell: bool) -> RemoteError | None:
        low = stderr.lower()
        spec = self.target.spec
        if "no space left on device" in low or "disk quota exceeded" in low:
            return RemoteError(f"{spec}: no space left in {self.target.work} while {what}: free some space there or "
                               f"set another work folder (targets file: work)")
        if shell and rc != 255:
            return None  # ssh worked: the exit status is the command's own (ssh's own failures are 255)
        line = _last_line(stderr)
        if any(s in low for s in _UNREACHABLE):
            return RemoteError(f"cannot reach {spec}: {line} (is the host up and its sshd listening on that port?)")
        if any(s in low for s in _AUTH):
            return RemoteError(f"{spec} refused authentication ({line}): add your key to the target's "
                               f"authorized_keys, or name it with ssh_options: [-i, KEY] in the targets file "
                               f"(BatchMode: ssh never prompts)")
        if "host key verification failed" in low or "remote host identification has changed" in low:
            return RemoteError(f"{spec}: host key not known or changed ({line}): ssh into it once by hand to check "
                               f"and accept its key")
        if any(s in low for s in _LOST) or "lost connection" in low:
            return RemoteError(f"connection to {spec} lost while {what}: {line}")
        return RemoteError(f"ssh to {spec} failed while {what}: {line or f'exit {rc}'}")


class AdbTransport(Transport):
    def _base(self) -> list[str]:
        return ["adb", *(["-s", self.target.serial] if self.target.serial else [])]

    def shell_argv(self, command: str) -> list[str]:
        return [*self._base(), "shell", command]

    def push_argv(self, files: Sequence[Path], remote_dir: str) -> list[str]:
        return [*self._base(), "push", *map(str, files), remote_dir + "/"]

    def pull_argv(self, remote: str, local: Path) -> list[str]:
        return [*self._base(), "pull", remote, str(local)]

    def classify(self, stderr: str, rc: int, what: str, shell: bool) -> RemoteError | None:
        low = stderr.lower()
        spec = self.target.spec
        if "no space left on device" in low:
            return RemoteError(f"{spec}: no space left in {self.target.work} while {what}: free some space there or "
                               f"set another work folder (targets file: work)")
        if re.search(r"no devices/emulators found|device '.*' not found|device offline|no such device", low):
            return RemoteError(f"cannot reach {spec}: {_last_line(stderr)} (plugged in, USB debugging on? "
                               f"see adb devices)")
        if "unauthorized" in low:
            return RemoteError(f"{spec} refused the connection (unauthorized): accept this computer's key on the "
                               f"device's USB-debugging prompt")
        return None


def connect(target: Target) -> Transport:
    """The transport of ``target``; a missing ``ssh``/``scp``/``adb`` here is a one-line error."""
    tools = ("ssh", "scp") if target.transport == "ssh" else ("adb",)
    for tool in tools:
        if shutil.which(tool) is None:
            fix = "install OpenSSH's client" if tool != "adb" else "install Android platform-tools"
            raise RemoteError(f"--remote {target.spec}: {tool} is not on PATH here: {fix}")
    return SshTransport(target) if target.transport == "ssh" else AdbTransport(target)
