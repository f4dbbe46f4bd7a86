"""Become the unprivileged tool uid for good: no supplementary groups, no capabilities, no way back."""

from __future__ import annotations

import os

import prctl


class PrivilegeDropFailed(RuntimeError):
    pass


def drop_privileges(uid: int, gid: int) -> None:
    """Drop to ``uid``/``gid`` (real, effective and saved), clear groups and the capability bounding set.

    Verifies the drop: a process that could become root again raises PrivilegeDropFailed instead of
    running tool code.
    """
    if os.geteuid() == 0 or prctl.cap_effective.setpcap:
        prctl.capbset.limit()  # empty bounding set: nothing exec'd later can regain a capability
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    prctl.set_no_new_privs(True)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise PrivilegeDropFailed(f"still {os.getresuid()} / {os.getresgid()} after dropping to {uid}:{gid}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PrivilegeDropFailed("the tool process could become root again")
