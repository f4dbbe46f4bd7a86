"""The sandbox's /etc view: its nsswitch.conf names only the name-service modules that work inside."""

from __future__ import annotations

import glob
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from machina.sandbox import SandboxPolicy, etcview, sandboxed_run
from machina.sandbox.etcview import ETC_ENTRIES, EtcView, sandbox_nsswitch

from .conftest import system_python

SYSTEMD_NSS = glob.glob("/usr/lib/*/libnss_systemd.so.2") + glob.glob("/lib/*/libnss_systemd.so.2")


def test_only_files_and_dns_are_left_with_the_actions_that_follow_them() -> None:
    host = (
        "# the host's\n"
        "passwd:         files systemd\n"
        "group:compat\n"
        "hosts: files mdns4_minimal [NOTFOUND=return] dns myhostname # trailing comment\n"
        "services: files [NOTFOUND=return] db\n"
        "netgroup: nis\n"
        "\n"
        "not a database line\n"
    )
    assert sandbox_nsswitch(host).splitlines() == [
        "# the host's",
        "passwd: files",
        "group: files",
        "hosts: files dns",
        "services: files [NOTFOUND=return]",
        "netgroup: files",
        "",
        "not a database line",
    ]


@pytest.fixture
def host_like_view(tmp_path: Path) -> Iterator[EtcView]:
    """A view of a copy of this host's /etc entries whose nsswitch.conf asks systemd for users and groups."""
    source = tmp_path / "etc"
    source.mkdir()
    for entry in ETC_ENTRIES:
        path = os.path.join("/etc", entry)
        if os.path.isfile(path) and entry != "nsswitch.conf":
            shutil.copyfile(path, source / entry)
    (source / "nsswitch.conf").write_text("passwd: files systemd\ngroup: files systemd\nhosts: files dns\n")
    view = EtcView(str(tmp_path / "run"), source=str(source), check_every=0)
    previous = etcview.install(view)
    yield view
    etcview.install(previous)
    view.close()


@pytest.mark.skipif(not SYSTEMD_NSS, reason="libnss_systemd is not installed: nothing could load it anyway")
def test_a_sandboxed_lookup_loads_no_name_service_module(bwrap_policy: SandboxPolicy, host_like_view: EtcView) -> None:
    # setpriv --reuid=65534 asks for a user named "65534" first: a miss in files goes on to the next module.
    code = (
        "import json, pwd\n"
        "names = [pwd.getpwuid(0).pw_name, pwd.getpwuid(65534).pw_name]\n"
        "try:\n    pwd.getpwnam('65534')\nexcept KeyError:\n    names.append(None)\n"
        "maps = open('/proc/self/maps').read()\n"
        "print(json.dumps([names, sorted({l.split('/')[-1] for l in maps.splitlines() if 'libnss' in l})]))"
    )
    result = sandboxed_run(
        [system_python(), "-I", "-S", "-c", code],
        policy=bwrap_policy,
        timeout_s=20,
        stdout_max=1 << 16,
        stderr_max=1 << 16,
    )
    assert result.ok, result.stderr
    names, loaded = json.loads(result.stdout)
    assert names == ["root", "nobody", None]  # the copied passwd answers, and only it
    assert loaded == []
