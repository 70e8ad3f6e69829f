"""Where ``edgezoo bench --remote SPEC`` runs: ``ssh://[user@]host[:port]``, ``adb[://serial]``, or a target
named in a targets file (YAML, read with ``yaml.safe_load``)::

    ssh_options: [-F, ~/.ssh/edgezoo_config]     # optional: for every ssh target and ssh:// SPEC
    targets:
      jetson:
        transport: ssh://ubuntu@jetson.local     # or adb, adb://SERIAL
        work: /tmp/edgezoo-bench                 # work folder on the target (default: this one)
        python: python3                          # the Python with numpy and the runtime; null: native runners only
        threads: 6                               # default: the target's usable cores
        cooldown: 30                             # seconds of rest between timed groups (default 0)
        ssh_options: [-i, ~/.ssh/jetson]         # added to this target's ssh/scp command lines
        runners:                                 # native runner binaries: a host path (pushed), or
          trtexec: target:/usr/src/tensorrt/bin/trtexec     # target:PATH for one already there
          onnxruntime_perf_test: ~/bin/aarch64/onnxruntime_perf_test

The default file is ``$EDGEZOO_TARGETS``, else ``$XDG_CONFIG_HOME/edgezoo/targets.yaml`` (``~/.config/...``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgezoo.errors import InvalidArgumentError

__all__ = ["NATIVE_RUNNERS", "Target", "default_targets_file", "parse_target"]

#: the native runner of each runtime, and the artifact it runs
NATIVE_RUNNERS = {"onnxruntime_perf_test": "ort", "executor_runner": "executorch", "benchmark_model": "litert",
                  "trtexec": "tensorrt"}
DEFAULT_WORK = "/tmp/edgezoo-bench"
ADB_WORK = "/data/local/tmp/edgezoo-bench"  # /sdcard is mounted noexec: native runners could not run there
_KEYS = {"transport", "work", "python", "threads", "cooldown", "ssh_options", "runners"}


@dataclass
class Target:
    """One target: how to reach it and what runs there."""

    name: str
    transport: str  # "ssh" or "adb"
    host: str = ""  # ssh: [user@]host
    port: int | None = None
    serial: str | None = None  # adb
    work: str = DEFAULT_WORK
    python: str | None = "python3"
    threads: int | None = None
    cooldown: float = 0.0
    ssh_options: list[str] = field(default_factory=list)
    runners: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        if self.transport == "adb":
            return f"adb://{self.serial}" if self.serial else "adb"
        return f"ssh://{self.host}" + (f":{self.port}" if self.port else "")


def default_targets_file() -> Path:
    if os.environ.get("EDGEZOO_TARGETS"):
        return Path(os.environ["EDGEZOO_TARGETS"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "edgezoo" / "targets.yaml"


_SSH = re.compile(r"^ssh://(?P<host>(?:[^@/:\s]+@)?(?:\[[0-9a-fA-F:]+\]|[^@/:\s]+))(?::(?P<port>\d+))?/?$")


def _transport(text: str, name: str) -> dict[str, Any]:
    m = _SSH.match(text)
    if m:
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 0 < port < 65536:
            raise InvalidArgumentError(f"--remote {text}: port {port} is not 1-65535")
        return {"transport": "ssh", "host": m["host"], "port": port}
    if text == "adb" or text.startswith("adb://"):
        serial = text[len("adb://"):] or None
        return {"transport": "adb", "serial": serial, "work": ADB_WORK}
    raise InvalidArgumentError(f"{name}: {text!r} is not ssh://[user@]host[:port], adb[://serial] or a target name "
                               f"in the targets file")


def _load(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise InvalidArgumentError(f"targets file {path} cannot be read ({type(err).__name__}): fix its YAML") from None
    if not isinstance(data, dict) or not isinstance(data.get("targets", {}), dict):
        raise InvalidArgumentError(f"targets file {path}: expected a mapping with 'targets: {{NAME: {{...}}}}'")
    return data


def _entry(name: str, entry: Any, path: Path) -> dict[str, Any]:
    where = f"targets file {path}, target {name!r}"
    if not isinstance(entry, dict) or "transport" not in entry:
        raise InvalidArgumentError(f"{where}: needs 'transport: ssh://[user@]host[:port]' or 'adb[://serial]'")
    unknown = set(entry) - _KEYS
    if unknown:
        raise InvalidArgumentError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: "
                                   f"{', '.join(sorted(_KEYS))})")
    out = _transport(str(entry["transport"]), where)
    for key in ("work", "python"):
        if key in entry:
            out[key] = None if entry[key] is None else str(entry[key])
    if entry.get("threads") is not None:
        if not isinstance(entry["threads"], int) or entry["threads"] < 1:
            raise InvalidArgumentError(f"{where}: threads must be an integer >= 1, got {entry['threads']!r}")
        out["threads"] = entry["threads"]
    if entry.get("cooldown") is not None:
        if not isinstance(entry["cooldown"], int | float) or entry["cooldown"] < 0:
            raise InvalidArgumentError(f"{where}: cooldown must be seconds >= 0, got {entry['cooldown']!r}")
        out["cooldown"] = float(entry["cooldown"])
    out["ssh_options"] = [str(o) for o in entry.get("ssh_options") or []]
    out["runners"] = runner_paths(entry.get("runners") or {}, where)
    return out


def runner_paths(runners: Any, where: str) -> dict[str, str]:
    """``{tool: path}`` checked: known tools; a host path exists (``target:PATH`` names one on the target)."""
    if not isinstance(runners, dict):
        raise InvalidArgumentError(f"{where}: runners must map a tool name to a path")
    out = {}
    for tool, path in runners.items():
        if tool not in NATIVE_RUNNERS:
            raise InvalidArgumentError(f"{where}: unknown native runner {tool!r} (known: {', '.join(NATIVE_RUNNERS)})")
        text = str(path)
        if not text.startswith("target:"):
            host = Path(text).expanduser()
            if not host.is_file():
                raise InvalidArgumentError(f"{where}: runner {tool} {host} is not a file here (give a host path to "
                                           f"push, or target:PATH for one on the target)")
            text = str(host)
        out[tool] = text
    return out


def parse_target(spec: str, targets_file: str | os.PathLike | None = None) -> Target:
    """The :class:`Target` ``spec`` names (a URL, or a name in ``targets_file`` / the default file)."""
    path = Path(targets_file).expanduser() if targets_file else default_targets_file()
    if targets_file and not path.is_file():
        raise InvalidArgumentError(f"--targets {path}: no such file")
    data = _load(path) if path.is_file() else {}
    common = [str(o) for o in data.get("ssh_options") or []]
    targets = data.get("targets") or {}
    if spec in targets:
        fields = _entry(spec, targets[spec], path)
    elif spec.startswith(("ssh://", "adb")):
        fields = _transport(spec, "--remote")
    else:
        known = ", ".join(sorted(targets)) or "none"
        raise InvalidArgumentError(f"--remote {spec!r}: not ssh://[user@]host[:port], adb[://serial], or a target in "
                                   f"{path} (targets there: {known})")
    fields["ssh_options"] = [*common, *fields.get("ssh_options", [])]
    return Target(name=spec, **fields)
