"""A throwaway Dovecot IMAP server on 127.0.0.1, for the tests and the benchmarks.

Never the system service: the server reads its own configuration from a temporary
folder (its base_dir, state, log, a passwd-file with one user, and a Maildir per user
all live there), listens on free loopback ports only, and is stopped and removed at
the end. As root it runs as the unprivileged ``dovenull`` user (as tools/pgtemp.py
runs PostgreSQL as ``postgres``; here the process drops to it before it starts
dovecot, which then runs in its rootless mode); otherwise as the user who starts it.

``tls=True`` also opens an IMAPS port with a self-signed certificate for 127.0.0.1
(made with the ``openssl`` command); ``server.ssl_context()`` trusts it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from outreach.channels.maildir import free_port

RUN_AS_ROOT = "dovenull"


def dovecot_bin() -> Path | None:
    """The dovecot binary (on PATH, or Debian's /usr/sbin/dovecot)."""
    found = shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None
    )
    return Path(found) if found else None


class DovecotServer:
    """A running throwaway server: where it listens, its user, its mail on disk."""

    def __init__(self, root: Path, user: str, password: str, port: int, tls_port: int | None,
                 owner: pwd.struct_passwd) -> None:  # fmt: skip
        self.root, self.user, self.password = root, user, password
        self.host, self.port, self.tls_port = "127.0.0.1", port, tls_port
        self.owner = owner
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``imap://user@127.0.0.1:PORT/INBOX`` (plain IMAP, loopback only)."""
        return f"imap://{self.user}@{self.host}:{self.port}/INBOX"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise RuntimeError("started without tls=True")
        return f"imaps://{self.user}@{self.host}:{self.tls_port}/INBOX"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's self-signed certificate."""
        return ssl.create_default_context(cafile=str(self.root / "cert.pem"))

    def maildir(self, folder: str = "INBOX") -> Path:
        """The Maildir of a folder: INBOX is the user's Maildir, others are ``.NAME``."""
        base = self.root / "mail" / self.user
        return base if folder == "INBOX" else base / f".{folder}"

    def deliver(self, raw: bytes, folder: str = "INBOX") -> Path:
        """Put a message into a folder's ``new/`` as a local delivery agent does
        (written to ``tmp/``, then renamed), owned by the server's user."""
        box = self.maildir(folder)
        for sub in ("cur", "new", "tmp"):
            self._own_dir(box / sub)
        name = f"{time.time():.6f}.{uuid.uuid4().hex}.outreach-test"
        tmp = box / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, self.owner.pw_uid, self.owner.pw_gid)
        target = box / "new" / name
        os.rename(tmp, target)
        return target

    def count(self, folder: str = "INBOX") -> int:
        """How many messages a folder holds on disk (``new/`` and ``cur/``)."""
        box = self.maildir(folder)
        return sum(len(os.listdir(box / sub)) for sub in ("new", "cur") if (box / sub).is_dir())

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _own_dir(self, path: Path) -> None:
        missing = []
        walk = path
        while not walk.exists():
            missing.append(walk)
            walk = walk.parent
        for folder in reversed(missing):
            folder.mkdir(mode=0o700)
            os.chown(folder, self.owner.pw_uid, self.owner.pw_gid)


def _config(server: DovecotServer) -> str:
    root, owner = server.root, server.owner
    group = _group_name(owner.pw_gid)
    tls = (
        f"ssl = yes\nssl_cert = <{root}/cert.pem\nssl_key = <{root}/key.pem\n"
        if server.tls_port is not None else "ssl = no\n"
    )  # fmt: skip
    imaps = (
        f"port = {server.tls_port}\n    address = 127.0.0.1"
        if server.tls_port is not None
        else "port = 0"
    )
    return f"""# written by tools/dovecot.py for one test run; removed with its folder
instance_name = outreach-test-{server.port}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
{tls}disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {owner.pw_name}
default_internal_group = {group}
default_login_user = {owner.pw_name}
first_valid_uid = {owner.pw_uid}
last_valid_uid = {owner.pw_uid}
first_valid_gid = {owner.pw_gid}
mail_location = maildir:{root}/mail/%u
mail_fsync = never
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={root}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {server.port}
    address = 127.0.0.1
  }}
  inet_listener imaps {{
    {imaps}
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  chroot =
}}
"""


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


def _make_certificate(root: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip


def _wait_for_greeting(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dovecot exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(256).startswith(b"* OK"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"dovecot did not answer on 127.0.0.1:{port} within {timeout:.0f} s")


@contextmanager
def dovecot_server(binary: Path, *, user: str = "bounces", password: str | None = None,
                   tls: bool = False, timeout: float = 20.0) -> Iterator[DovecotServer]:  # fmt: skip
    """Start a server in a temporary folder with one user; yield it; stop and remove it."""
    as_root = os.geteuid() == 0
    owner = pwd.getpwnam(RUN_AS_ROOT) if as_root else pwd.getpwuid(os.geteuid())
    root = Path(tempfile.mkdtemp(prefix="outreach-dovecot-"))
    server = DovecotServer(root, user, password or uuid.uuid4().hex, free_port(),
                           free_port() if tls else None, owner)  # fmt: skip
    try:
        for sub in ("run", "state", "mail", "home"):
            (root / sub).mkdir()
        (root / "passwd").write_text(f"{user}:{{PLAIN}}{server.password}::::::\n")
        (root / "dovecot.conf").write_text(_config(server))
        if tls:
            _make_certificate(root)
        for path in (root, *root.rglob("*")):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        os.chmod(root, 0o700)
        drop = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []} if as_root else {}
        with open(root / "stderr", "wb") as stderr:
            server.process = subprocess.Popen(
                [str(binary), "-F", "-c", str(root / "dovecot.conf")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                start_new_session=True, **drop,  # type: ignore[arg-type]
            )  # fmt: skip
        try:
            _wait_for_greeting(server.port, server.process, timeout)
        except RuntimeError as exc:
            raise RuntimeError(
                f"{exc}\n{server.log()}{(root / 'stderr').read_text(errors='replace')}"
            ) from None
        yield server
    finally:
        _stop(server.process)
        shutil.rmtree(root, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM to the master (it stops its children), then SIGKILL to its process group
    (its own session) if it has not ended in 10 s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
