"""Test harness: runs the real ringmta daemon on loopback and talks to it.

Every test gets a private spool directory and a free port on 127.0.0.1; the
daemon's log is kept in the test's temporary directory and printed when a
test fails. Paths to the programs come from the environment (set by
tests/integration/meson.build): RINGMTA, RINGMTA_CTL.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

RINGMTA = os.environ.get("RINGMTA", "build/io/ringmta")
RINGMTA_CTL = os.environ.get("RINGMTA_CTL", "build/io/ringmta-ctl")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_DEAD_PORTS = []


def dead_port():
    """A loopback port that refuses connections for the life of this test
    process: bound, never listened on, so nobody else can take it."""
    if not _DEAD_PORTS:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", 0))
            _DEAD_PORTS.append(s)
    return _DEAD_PORTS[0].getsockname()[1]


class Daemon:
    """One ringmta process with its own spool and port."""

    def __init__(self, tmpdir, workers=2, **settings):
        self.tmpdir = tmpdir
        self.port = free_port()
        self.spool = os.path.join(tmpdir, "spool")
        self.log_path = os.path.join(tmpdir, "ringmta.log")
        self.settings = {
            "listen": "127.0.0.1:%d" % self.port,
            "spool_dir": self.spool,
            "workers": str(workers),
            "hostname": "relay.test",
            "spool_segment_size": "4M",
            # Tests never reach real DNS or remote hosts: mail goes to a local
            # port nothing listens on (deliveries defer) unless a test gives a
            # relayhost of its own, and lookups go to a dead local port.
            "relayhost": "[127.0.0.1]:%d" % dead_port(),
            "dns_servers": "127.0.0.1:%d" % dead_port(),
        }
        self.settings.update({k: str(v) for k, v in settings.items()})
        self.proc = None

    def args(self):
        a = [RINGMTA]
        for k, v in self.settings.items():
            a += ["-o", "%s=%s" % (k, v)]
        return a

    def start(self, timeout=10.0):
        log = open(self.log_path, "ab")
        start_at = log.tell()
        self.proc = subprocess.Popen(self.args(), stdout=log, stderr=log, cwd=self.tmpdir)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ringmta exited with %d:\n%s" % (self.proc.returncode, self.log()))
            if "ringmta ready" in self.log()[start_at:]:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return self
                except OSError:
                    pass
            time.sleep(0.02)
        raise RuntimeError("ringmta did not start:\n" + self.log())

    def stop(self, timeout=10.0):
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("ringmta did not stop on SIGTERM")

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        """The whole log of this daemon (all its starts), as text."""
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def spool_list(self):
        """ringmta-ctl spool list as a list of (qid, sender, nrcpt, size, state)."""
        out = subprocess.run([RINGMTA_CTL, "-o", "spool_dir=" + self.spool, "spool", "list"],
                             check=True, capture_output=True, text=True, timeout=60).stdout
        rows = []
        for line in out.splitlines():
            qid, sender, nrcpt, size, state = line.split(" ")
            rows.append((qid, sender, int(nrcpt), int(size), state))
        return rows

    def connect(self, greet=True, timeout=10.0):
        return Session(self.port, greet=greet, timeout=timeout)


class Session:
    """A raw SMTP client for scripted sessions: bytes out, parsed replies in."""

    def __init__(self, port, greet=True, timeout=10.0, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.banner = self.reply() if greet else None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def reply(self):
        """Reads one (possibly multi-line) reply: returns (code, [texts]).
        Returns (None, []) when the server closed the connection."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                try:
                    chunk = self.sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    return (None, lines)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            if not re.match(r"^\d{3}[ -]", text + " "):
                raise AssertionError("malformed reply line %r" % text)
            lines.append(text[4:])
            if len(text) == 3 or text[3] == " ":
                return (int(text[:3]), lines)

    def cmd(self, line):
        """Sends one command line (CRLF added) and returns its reply code."""
        self.send(line + "\r\n")
        return self.reply()[0]

    def closed(self, timeout=5.0):
        """True when the server has closed (EOF or reset) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def mail(self, sender, rcpts, body, ehlo="client.test"):
        """A whole transaction; returns the final reply (code, texts)."""
        assert self.cmd("EHLO " + ehlo) == 250
        assert self.cmd("MAIL FROM:<%s>" % sender) == 250
        for r in rcpts:
            assert self.cmd("RCPT TO:<%s>" % r) == 250
        assert self.cmd("DATA") == 354
        if isinstance(body, str):
            body = body.encode()
        self.send(body + b".\r\n")
        return self.reply()


class DaemonTest(unittest.TestCase):
    """Base class: self.daemon() starts a daemon that is stopped after the test."""

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix="ringmta-test-")
        self.daemons = []

    def tearDown(self):
        failed = any(e for _, e in getattr(self._outcome, "errors", []) if e) \
            if hasattr(self._outcome, "errors") else False
        for d in self.daemons:
            d.kill9()
        result = getattr(self._outcome, "result", None)
        if result is not None and (result.failures or result.errors):
            for d in self.daemons:
                print("---- ringmta log (%s) ----\n%s" % (d.tmpdir, d.log()[-8000:]))
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def daemon(self, start=True, **settings):
        d = Daemon(self.tmpdir, **settings)
        self.daemons.append(d)
        if start:
            d.start()
        return d


def main():
    unittest.main(verbosity=2)
