"""Become a managed server: own process group, optional user, parent-death signal, then exec.

    python -I -S become.py <death_signal> <parent_pid> <user|-> -- <argv...>

`ManagedProcess` starts every server through this small, fresh interpreter instead of running a
`preexec_fn` in a forked copy of its own process. A forked copy of a process with gRPC's threads
runs gRPC's fork handlers, which can deadlock in the child (seen: the test process hung for good
in `Popen` while starting NATS); without a `preexec_fn` CPython spawns with vfork and exec, and
no fork handler runs at all. Standard library only, no site packages (`-I -S`).
"""

import ctypes
import os
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    death_signal, parent_pid, user = int(argv[1]), int(argv[2]), argv[3]
    if argv[4] != "--" or len(argv) < 6:
        raise SystemExit("usage: become.py <death_signal> <parent_pid> <user|-> -- <argv...>")
    command = argv[5:]
    # Own process group: a Ctrl-C aimed at the parent's group does not skip our graceful stop.
    os.setpgid(0, 0)
    if user != "-":
        import pwd

        entry = pwd.getpwnam(user)
        # Credentials first: the kernel clears PDEATHSIG whenever the effective uid changes.
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
    os.execvp(command[0], command)  # noqa: S606 (our own server argv, never a shell string)


if __name__ == "__main__":
    main(sys.argv)
