"""The .deb installs, works, upgrades and uninstalls on this machine; the .rpm is well formed.

The .deb test really runs `dpkg -i` here (root, CI machine): it checks the installed commands,
the installed example config, permissions of the option file, the enabled-but-not-started
unit, that a changed config survives a reinstall, and that `dpkg -r` keeps the config.
"""

from __future__ import annotations

import grp
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupd import __version__
from tests.testbed.daemon import NotifyListener
from tests.testbed.packages import build_package
from tests.tools import require_tool

pytestmark = pytest.mark.integration

CONFIG = Path("/etc/backupd/backupd.toml")
OPTION_FILE = Path("/etc/backupd/my.cnf")
WANTS = Path("/etc/systemd/system/multi-user.target.wants/backupd.service")


def run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)


def dpkg(*args: str) -> subprocess.CompletedProcess[str]:
    """dpkg, waiting while another apt/dpkg run holds the lock (other jobs share the host)."""
    deadline = time.monotonic() + 300
    while True:
        result = run("dpkg", *args)
        if "lock" not in result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(2)  # no event to await for a foreign dpkg lock


@pytest.fixture(scope="module")
def deb(deb_package: Path) -> Iterator[Path]:
    if run("dpkg-query", "-W", "backupd").returncode == 0:
        pytest.fail("a backupd package is already installed here; refusing to touch it")
    yield deb_package
    dpkg("--purge", "backupd")


ADMIN_FILES = (
    "/usr/share/man/man8/backupd.8.gz",
    "/usr/share/man/man8/backupctl.8.gz",
    "/usr/share/man/man5/backupd.toml.5.gz",
    "/usr/share/bash-completion/completions/backupd",
    "/usr/share/bash-completion/completions/backupctl",
)


def test_deb_carries_man_pages_completions_and_environment_file(deb: Path) -> None:
    listing = run("dpkg-deb", "-c", str(deb)).stdout
    for path in (*ADMIN_FILES, "/usr/share/zsh/vendor-completions/_backupctl"):
        assert f".{path}\n" in listing, path
    assert "-rw------- root/root" in next(
        line for line in listing.splitlines() if line.endswith("./etc/default/backupd")
    )
    conffiles = run("dpkg-deb", "-I", str(deb), "conffiles").stdout.split()
    assert "/etc/default/backupd" in conffiles


def installed_admin_files_work() -> None:
    """The installed pages render with man, the completions parse and complete."""
    for page in ADMIN_FILES[:3]:
        shown = run("man", "-l", page)
        assert shown.returncode == 0 and "SEE ALSO" in shown.stdout.replace("\b", ""), page
    for script in ADMIN_FILES[3:]:
        assert run("bash", "-n", script).returncode == 0, script
    completed = run(
        "bash",
        "--norc",
        "-c",
        f"source {ADMIN_FILES[4]}; COMP_WORDS=(backupctl binlog ''); COMP_CWORD=2; "
        '_backupctl; echo "${COMPREPLY[@]}"',
    )
    assert completed.stdout.split() == ["status", "fetch", "index"], completed.stderr
    environment = Path("/etc/default/backupd")
    assert stat.S_IMODE(environment.stat().st_mode) == 0o600
    assert "#AWS_ACCESS_KEY_ID=" in environment.read_text()


def test_deb_install_run_remove(deb: Path) -> None:
    assert deb.stat().st_size < 80 * 1024 * 1024
    installed = dpkg("--force-confdef", "--force-confold", "-i", str(deb))
    assert installed.returncode == 0, installed.stdout + installed.stderr

    version = run("/usr/bin/backupd", "--version")
    assert version.stdout.strip() == f"backupd {__version__}", version.stderr
    check = run("/usr/bin/backupd", "check-config", "--config", str(CONFIG))
    assert check.returncode == 0, check.stderr
    # The daemon's own user reads its config (group) and option file (owner, 0600).
    as_user = run("runuser", "-u", "backupd", "--", "/usr/bin/backupd", "check-config")
    assert as_user.returncode == 0, as_user.stderr
    mode = OPTION_FILE.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o600
    assert mode.st_uid == int(run("id", "-u", "backupd").stdout)
    # Enabled, never started by the package.
    assert WANTS.is_symlink()
    assert run("pgrep", "-f", "/usr/bin/backupd run").stdout == ""

    installed_admin_files_work()
    daemon_starts_as_backupd()

    CONFIG.write_text(CONFIG.read_text() + "\n# edited by the operator\n")
    again = dpkg("--force-confdef", "--force-confold", "-i", str(deb))
    assert again.returncode == 0, again.stderr
    assert CONFIG.read_text().endswith("# edited by the operator\n")

    removed = dpkg("-r", "backupd")
    assert removed.returncode == 0, removed.stderr
    assert CONFIG.read_text().endswith("# edited by the operator\n")
    assert OPTION_FILE.exists()
    assert not os.path.lexists("/usr/bin/backupd")
    assert not Path("/opt/backupd/venv").exists()


def daemon_starts_as_backupd() -> None:
    """The installed daemon, as `backupd` with only the unit's capability, reaches READY=1.

    Paths the unit would provide (RuntimeDirectory, StateDirectory, ...) point into a
    scratch directory owned by backupd; features that need AWS or MySQL are switched off.
    """
    base = Path(tempfile.mkdtemp(prefix="backupd-pkg-"))
    base.chmod(0o755)
    shutil.chown(base, "backupd", "backupd")
    notify = NotifyListener(base / "notify.sock")
    (base / "notify.sock").chmod(0o777)
    env = {
        "PATH": "/usr/bin:/bin",
        "NOTIFY_SOCKET": str(base / "notify.sock"),
        "BACKUPD_DAEMON__SOCKET": str(base / "control.sock"),
        "BACKUPD_DAEMON__STATE_DIR": str(base / "state"),
        "BACKUPD_DAEMON__SPOOL_DIR": str(base / "spool"),
        "BACKUPD_METRICS__LISTEN": "127.0.0.1:0",
        "BACKUPD_MYSQL__SOCKET": str(base / "no-such-mysqld.sock"),
        "BACKUPD_STORAGE__URL": f"file://{base / 'repository'}",
        "BACKUPD_SNAPSHOT__ENABLED": "false",
        "BACKUPD_BINLOG__ENABLED": "false",
    }
    caps = "-all,+sys_admin"
    argv = ["setpriv", "--reuid=backupd", "--regid=backupd", "--init-groups"]
    argv += [f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}"]
    argv += ["--no-new-privs", "/usr/bin/backupd", "run", "--config", str(CONFIG)]
    log = base / "daemon.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        notify.wait_for("READY", "1", timeout=60)
        uid = int(run("id", "-u", "backupd").stdout)
        socket_file = (base / "control.sock").stat()
        assert socket_file.st_uid == uid
        # readers have their own group (made by sysusers), apart from the data's owner
        assert socket_file.st_gid == grp.getgrnam("backupd-readers").gr_gid
        grp.getgrnam("backupd-admin")
        for data in ("state", "spool", "repository"):
            info = (base / data).stat()
            assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (uid, 0o700), data
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{log.read_text()}") from exc
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        notify.close()
    assert code == 0, log.read_text()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def rpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("rpmbuild", "rpm")
    return build_package("rpm/build.sh", tmp_path_factory.mktemp("rpm"))


def test_rpm_metadata_and_files(rpm: Path) -> None:
    info = run("rpm", "-qip", str(rpm)).stdout
    assert "Name        : backupd" in info
    assert f"Version     : {__version__}" in info
    listing = run("rpm", "-qlvp", str(rpm)).stdout.splitlines()
    by_path = {line.split()[-1]: line for line in listing if "->" not in line}
    links = {line.split()[-3]: line.split()[-1] for line in listing if "->" in line}
    assert links["/usr/bin/backupd"] == "/opt/backupd/venv/bin/backupd"
    assert by_path["/etc/backupd/my.cnf"].startswith("-rw------- ")
    assert " backupd " in by_path["/etc/backupd/my.cnf"]
    assert "/usr/lib/systemd/system/backupd.service" in by_path
    assert any("-cp311-" in path for path in by_path)
    assert not any("-cp312-" in path for path in by_path)
    config_files = run("rpm", "-qcp", str(rpm)).stdout.split()
    assert config_files == [
        "/etc/backupd/backupd.toml",
        "/etc/backupd/my.cnf",
        "/etc/sysconfig/backupd",
    ]
    for path in (*ADMIN_FILES, "/usr/share/zsh/site-functions/_backupctl"):
        assert path in by_path, path
    assert by_path["/etc/sysconfig/backupd"].startswith("-rw------- ")
    flags = run("rpm", "-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]", str(rpm)).stdout
    assert "cn /etc/backupd/backupd.toml" in flags  # %config(noreplace)
    scripts = run("rpm", "-qp", "--scripts", str(rpm)).stdout
    post = scripts.split("postinstall scriptlet")[1].split("preuninstall scriptlet")[0]
    assert "systemctl enable backupd.service" in post
    commands = [line.strip() for line in post.splitlines()]
    assert not [c for c in commands if "start" in c and not c.startswith("echo")], post
    requires = run("rpm", "-qRp", str(rpm)).stdout
    assert "python3.11" in requires
    postun = scripts.split("postuninstall scriptlet")[1]
    assert 'mv "/etc/backupd/$f.rpmsave" "/etc/backupd/$f"' in postun


def test_rpm_erase_keeps_an_edited_config(rpm: Path, tmp_path: Path) -> None:
    """Unpacked into a scratch root (no scriptlets: no shell there), an edited config
    survives `rpm -e` as .rpmsave, which %postun moves back in place on a real host."""
    root = tmp_path / "root"
    common = ["--root", str(root), "--dbpath", str(root / "rpmdb"), "--noscripts"]
    installed = run("rpm", "-i", *common, "--nodeps", str(rpm))
    assert installed.returncode == 0, installed.stderr
    config = root / "etc" / "backupd" / "backupd.toml"
    config.write_text(config.read_text() + "# edited by the operator\n")
    erased = run("rpm", "-e", *common, "backupd")
    assert erased.returncode == 0, erased.stderr
    saved = config.with_name("backupd.toml.rpmsave")
    assert saved.read_text().endswith("# edited by the operator\n")
    assert not (root / "usr" / "bin" / "backupd").is_symlink()
