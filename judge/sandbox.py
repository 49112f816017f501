"""The worker's confinement: what it may touch, in one declarative policy, applied with the
kernel's own mechanisms before the submission is imported.

- Files, with Landlock (the ``landlock`` package; Linux 5.13 or newer): the worker reads
  everywhere, but may create, change, rename or delete files only under the policy's folders
  (its scratch folder, which holds the JIT caches it is given, and its own /proc entries) and
  open for writing only the device files in ``WRITABLE_DEVICES`` (the GPU driver's). Landlock
  also keeps it from ptracing any process outside its own domain, and from changing mounts.
- Processes and network, with seccomp (``pyseccomp`` over libseccomp): ``DENIED_SYSCALLS`` fail
  with EPERM: signals to any process but itself, ptrace and reads or writes of other processes'
  memory, leaving its process group, mounts, kernel modules, io_uring (which could bypass the
  filter), and IPv4/IPv6 sockets. Unix sockets stay: the judge hands CPU tensors over one.
- Session and descriptors (plain POSIX, in ``judge.worker``): its own session and process group,
  so the judge can kill it with every child; every inherited descriptor closed but the two pipes
  to the judge and the log.

The GPU stays reachable: /dev/nvidia* open for writing, CUDA IPC through the driver, the
driver's files readable. What was applied is reported as a short string ("landlock+seccomp",
or "seccomp (landlock: <why not>)", or "none: <why>") in the report header and the JSON.
"""

import errno
import glob
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

MODES = ("auto", "require", "off")

# Device files the worker may open for writing (the CUDA driver opens them read-write).
WRITABLE_DEVICES = (
    "/dev/nvidia*",
    "/dev/nvidia-caps/*",
    "/dev/dri/*",
    "/dev/shm",  # CUDA IPC reference counts and torch's shared CPU tensors
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
)

# (syscall, argument index, the value it must equal to be allowed); None: always denied.
# "self" stands for the worker's pid at the time the filter is loaded.
DENIED_SYSCALLS: Tuple[Tuple[str, Optional[int], Optional[str]], ...] = (
    ("kill", 0, "self"),
    ("tgkill", 0, "self"),
    ("rt_sigqueueinfo", 0, "self"),
    ("rt_tgsigqueueinfo", 0, "self"),
    ("tkill", None, None),
    ("pidfd_send_signal", None, None),
    ("pidfd_getfd", None, None),
    ("ptrace", None, None),
    ("process_vm_readv", None, None),
    ("process_vm_writev", None, None),
    ("process_madvise", None, None),
    ("kcmp", None, None),
    ("setsid", None, None),
    ("setpgid", None, None),
    ("mount", None, None),
    ("umount2", None, None),
    ("pivot_root", None, None),
    ("move_mount", None, None),
    ("open_tree", None, None),
    ("fsopen", None, None),
    ("fsmount", None, None),
    ("open_by_handle_at", None, None),
    ("init_module", None, None),
    ("finit_module", None, None),
    ("delete_module", None, None),
    ("kexec_load", None, None),
    ("kexec_file_load", None, None),
    ("reboot", None, None),
    ("swapon", None, None),
    ("swapoff", None, None),
    ("io_uring_setup", None, None),
    ("io_uring_enter", None, None),
    ("io_uring_register", None, None),
)
DENIED_SOCKET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


@dataclass(frozen=True)
class Policy:
    """What one worker may write: folders (with everything below them) and device files."""

    writable_dirs: Tuple[str, ...]
    writable_devices: Tuple[str, ...] = WRITABLE_DEVICES

    @classmethod
    def for_scratch(cls, scratch: Path) -> "Policy":
        """The worker's policy: its scratch folder, and its own /proc entries (the CUDA driver
        names its threads through /proc/<pid>/task/<tid>/comm and fails to start without)."""
        return cls(writable_dirs=(str(scratch), os.path.realpath("/proc/self")))


class SandboxUnavailable(RuntimeError):
    """``--sandbox require`` and a mechanism is missing; the message says which and why."""


def _landlock_abi() -> Tuple[int, str]:
    """(ABI version, "") when Landlock can be used here, else (0, why not)."""
    if not os.uname().sysname == "Linux":
        return 0, f"Landlock is Linux-only (this is {os.uname().sysname})"
    try:
        import landlock
    except ImportError:
        return 0, "the landlock package is not installed"
    try:
        return landlock.landlock_abi_version(), ""
    except OSError as exc:
        return 0, f"the kernel refuses Landlock ({exc.strerror or exc})"


def _seccomp_module():
    """(pyseccomp, "") when seccomp filters can be loaded, else (None, why not)."""
    if not os.uname().sysname == "Linux":
        return None, "seccomp is Linux-only"
    try:
        import pyseccomp
    except (ImportError, OSError) as exc:  # OSError: libseccomp.so.2 is missing
        return None, f"pyseccomp/libseccomp is not available ({exc})"
    return pyseccomp, ""


def probe() -> Tuple[bool, bool, str]:
    """Which mechanisms this machine offers: (landlock, seccomp, reasons for what is missing).
    Cheap and side-effect free: the judge calls it before starting a worker."""
    abi, why_landlock = _landlock_abi()
    module, why_seccomp = _seccomp_module()
    reasons = "; ".join(r for r in (why_landlock, why_seccomp) if r)
    return abi > 0, module is not None, reasons


def _landlock_rights(abi: int) -> Tuple[int, int]:
    """(rights handled for folders, rights for files) at this ABI: every kind of write."""
    from landlock import FSAccess

    file_rights = FSAccess.WRITE_FILE | (FSAccess.TRUNCATE if abi >= 3 else 0)
    dir_rights = (
        file_rights
        | FSAccess.REMOVE_DIR
        | FSAccess.REMOVE_FILE
        | FSAccess.MAKE_CHAR
        | FSAccess.MAKE_DIR
        | FSAccess.MAKE_REG
        | FSAccess.MAKE_SOCK
        | FSAccess.MAKE_FIFO
        | FSAccess.MAKE_BLOCK
        | FSAccess.MAKE_SYM
        | (FSAccess.REFER if abi >= 2 else 0)
    )
    return dir_rights, file_rights


def _apply_landlock(policy: Policy, abi: int):
    import landlock

    dir_rights, file_rights = _landlock_rights(abi)
    ruleset = landlock.Ruleset(restrict_rules=landlock.FSAccess(dir_rights))
    for folder in policy.writable_dirs:
        ruleset.allow(folder, rules=landlock.FSAccess(dir_rights))
    for pattern in policy.writable_devices:
        for path in glob.glob(pattern):
            rights = dir_rights if os.path.isdir(path) else file_rights
            try:
                ruleset.allow(path, rules=landlock.FSAccess(rights))
            except OSError:  # vanished, or not openable with O_PATH: it stays read-only
                pass
    ruleset.apply()


def _apply_seccomp(pyseccomp):
    me = os.getpid()
    deny = pyseccomp.ERRNO(errno.EPERM)
    rules = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
    rules.set_attr(pyseccomp.Attr.CTL_TSYNC, 1)  # every thread of the process, not only this one
    for name, arg, allowed in DENIED_SYSCALLS:
        conditions = [] if arg is None else [pyseccomp.Arg(arg, pyseccomp.NE, me)]
        try:
            rules.add_rule(deny, name, *conditions)
        except (RuntimeError, OSError, ValueError):  # a syscall this libseccomp does not know
            pass
    for family in DENIED_SOCKET_FAMILIES:
        rules.add_rule(
            pyseccomp.ERRNO(errno.EACCES), "socket", pyseccomp.Arg(0, pyseccomp.EQ, family)
        )
    rules.load()


def confine(policy: Policy, mode: str) -> str:
    """Confine this process (the worker) by ``policy``; returns what was applied.

    Args:
        policy: the folders and device files it may write.
        mode: "auto" (apply what the machine offers), "require" (both Landlock and seccomp, or
            raise) or "off" (nothing).

    Returns:
        "landlock+seccomp", a partial form such as "seccomp (landlock: <why not>)", or
        "none: <why>".

    Raises:
        SandboxUnavailable: ``mode`` is "require" and a mechanism is missing or failed.
    """
    if mode == "off":
        return "none: --sandbox off"
    abi, why_landlock = _landlock_abi()
    pyseccomp, why_seccomp = _seccomp_module()
    applied: List[str] = []
    missing: List[str] = []
    if abi:
        try:
            _apply_landlock(policy, abi)
            applied.append("landlock")
        except OSError as exc:
            missing.append(f"landlock: {exc}")
    else:
        missing.append(f"landlock: {why_landlock}")
    if pyseccomp is not None:
        try:
            _apply_seccomp(pyseccomp)
            applied.append("seccomp")
        except (RuntimeError, OSError) as exc:
            missing.append(f"seccomp: {exc}")
    else:
        missing.append(f"seccomp: {why_seccomp}")
    if missing and mode == "require":
        raise SandboxUnavailable("--sandbox require: " + "; ".join(missing))
    if not applied:
        return "none: " + "; ".join(missing)
    return "+".join(applied) + (f" ({'; '.join(missing)})" if missing else "")
