"""Delivery to real next hops on loopback (issue 3).

Next hops, all on 127.0.0.1:
  - a Python aiosmtpd server (Capture) that keeps every transaction's
    envelope and exact body, and can answer 451 to the first attempt of
    chosen recipients or messages and 550 to others. It offers neither
    PIPELINING nor CHUNKING, so BDAT-received mail must reach it by DATA,
    dot-stuffed by ringmta and un-stuffed by aiosmtpd;
  - bench's ringmta-sink (RingSink): counts messages and connections and
    keeps bodies (--keep), offers PIPELINING and CHUNKING;
  - Postfix's smtp-sink (PostfixSink), for the issue's "done when";
  - a small asyncio SMTP sink (CountingSink) that counts concurrent
    connections exactly (a connection counts from accept until its QUIT
    reply is written or it is lost);
  - dnsmasq on a loopback port for delivery by MX.

Every wait is bounded; nothing leaves the machine. DSN bounces are not
checked here; a null-sender message (a bounce, once generated) reaching a
capturing server is ignored by the checks.
"""
import asyncio
import json
import os
import random
import re
import smtplib
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

from harness import RINGMTA, DaemonTest, free_port, main

BUILD = os.path.dirname(os.path.dirname(os.path.abspath(RINGMTA)))
SINK = os.path.join(BUILD, "bench", "ringmta-sink")
BENCH = os.path.join(BUILD, "bench", "ringmta-bench")
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
DNSMASQ = "/usr/sbin/dnsmasq"

try:
    from aiosmtpd.controller import Controller
    HAVE_AIOSMTPD = True
except ImportError:     # pragma: no cover
    HAVE_AIOSMTPD = False

# One delivery attempt per recipient per line (io/delivery.c out_log_result).
LOG_RE = re.compile(r"([0-9a-f]{16}): to=<([^>]*)>, relay=(\S+), delay=[0-9.]+, "
                    r"attempt=(\d+), dsn=([0-9.]+), status=(sent|deferred|bounced) \((.*)\)$")


def note(text):
    """Numbers worth seeing in the test output (meson keeps stderr)."""
    print("  [delivery] " + text, file=sys.stderr, flush=True)


def wait_for(cond, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def stuff(body):
    """Dot-stuffs a CRLF body for DATA (RFC 5321 4.5.2)."""
    assert body == b"" or body.endswith(b"\r\n")
    lines = body.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines)


RECEIVED_RE = re.compile(rb"\AReceived: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*")


def strip_received(content):
    """Our Received: header, then what the client sent."""
    m = RECEIVED_RE.match(content)
    assert m is not None, "no Received: header first: %r" % content[:200]
    assert b"by relay.test (ringmta)" in m.group(0), m.group(0)
    return content[m.end():]


def deliveries(d):
    """Parsed delivery log lines: (qid, to, relay, attempt, dsn, status, text)."""
    out = []
    for line in d.log().splitlines():
        m = LOG_RE.search(line)
        if m:
            out.append((m.group(1), m.group(2), m.group(3), int(m.group(4)), m.group(5),
                        m.group(6), m.group(7)))
    return out


def wait_spool_empty(d, timeout):
    t0 = time.monotonic()
    wait_for(lambda: d.spool_list() == [], timeout, "the spool to drain", interval=0.2)
    return time.monotonic() - t0


def smtp_source(port, n, sessions, rcpt, sender="a@example.org", timeout=120):
    out = subprocess.run([SMTP_SOURCE, "-s", str(sessions), "-m", str(n), "-f", sender,
                          "-t", rcpt, "127.0.0.1:%d" % port],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr


# --- next hops -----------------------------------------------------------------


class Capture:
    """aiosmtpd in a thread; every transaction that reached end of data is a
    dict(mail_from, mail_options, rcpts, content, code)."""

    def __init__(self, tempfail_first=(), reject=(), data_tempfail_first=(), port=None,
                 host="127.0.0.1", tempfail_always=()):
        self.tempfail_first = set(tempfail_first)     # RCPT: 451 the first time
        self.tempfail_always = set(tempfail_always)   # RCPT: 450 every time
        self.reject = set(reject)                     # RCPT: 550 always
        self.data_tempfail_first = set(data_tempfail_first)   # body markers: 451 once
        self.lock = threading.Lock()
        self.txns = []
        self.rcpt_log = []          # (address, code, monotonic time)
        self.data_log = []          # (marker or None, code, monotonic time)
        self.seen_rcpt = set()
        self.seen_marker = set()
        self.port = port or free_port()
        self.controller = Controller(self, hostname=host, port=self.port,
                                     ready_timeout=10)
        self.controller.start()

    def stop(self):
        self.controller.stop()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            if address in self.reject:
                code = "550 5.1.1 <%s>: no such user" % address
            elif address in self.tempfail_always:
                code = "450 4.2.1 <%s>: mailbox busy" % address
            elif address in self.tempfail_first and address not in self.seen_rcpt:
                self.seen_rcpt.add(address)
                code = "451 4.2.0 <%s>: try again later" % address
            else:
                envelope.rcpt_tos.append(address)
                code = "250 2.1.5 Ok"
            self.rcpt_log.append((address, int(code[:3]), time.monotonic()))
        return code

    async def handle_DATA(self, server, session, envelope):
        content = bytes(envelope.original_content)
        with self.lock:
            marker = next((m for m in self.data_tempfail_first if m in content), None)
            if marker is not None and marker not in self.seen_marker:
                self.seen_marker.add(marker)
                self.data_log.append((marker, 451, time.monotonic()))
                return "451 4.3.0 try that again"
            self.data_log.append((marker, 250, time.monotonic()))
            # aiosmtpd reports MAIL FROM:<> as "<>"
            sender = "" if envelope.mail_from in ("", "<>") else envelope.mail_from
            self.txns.append(dict(mail_from=sender,
                                  mail_options=list(envelope.mail_options),
                                  rcpts=list(envelope.rcpt_tos), content=content))
        return "250 2.0.0 Ok: captured"

    def mail(self, with_null_sender=False):
        """Transactions from a real sender (bounces, sender <>, left out)."""
        with self.lock:
            return [t for t in self.txns if with_null_sender or t["mail_from"] != ""]

    def rcpts(self, address):
        with self.lock:
            return [c for a, c, _ in self.rcpt_log if a == address]


class RingSink:
    """bench's ringmta-sink with JSON reports every 0.1 s."""

    def __init__(self, tmpdir, keep=False, latency_ms=None, extra=()):
        self.keep = os.path.join(tmpdir, "kept") if keep else None
        args = [SINK, "--listen", "127.0.0.1:0", "--json", "--report-every", "0.1"]
        if self.keep:
            os.makedirs(self.keep, exist_ok=True)
            args += ["--keep", self.keep]
        if latency_ms:
            args += ["--latency", str(latency_ms)]
        args += list(extra)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.last = {}
        self.final = None
        self.max_open = 0
        line = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
            if not line:
                break
        else:
            line = b""
        if not line:
            self.proc.kill()
            raise RuntimeError("ringmta-sink did not start")
        self.readers = [threading.Thread(target=self._read, daemon=True),
                        threading.Thread(target=self._drain, daemon=True)]
        for t in self.readers:
            t.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            self.max_open = max(self.max_open, r.get("connections_open", 0))
            self.last = r
            if r.get("final"):
                self.final = r

    def _drain(self):
        for _ in self.proc.stderr:
            pass

    def messages(self):
        return self.last.get("messages", 0)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self.readers:
            t.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.final or self.last


class PostfixSink:
    """Postfix's smtp-sink -c: counts sessions and messages."""

    def __init__(self, tmpdir):
        self.out_path = os.path.join(tmpdir, "smtp-sink.out")
        self.port = free_port()
        args = [SMTP_SINK]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        args += ["-c", "127.0.0.1:%d" % self.port, "1000"]
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT)
        self.probes = 0

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError("smtp-sink exited: " + self.text())
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            except OSError:
                return False
            self.probes += 1
            s.close()
            return True
        wait_for(up, 10, "smtp-sink to listen")

    def text(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode(errors="replace")

    def counters(self):
        """(sessions, messages), the probe connections left out."""
        found = re.findall(r"sess=(\d+) quit=\d+ mesg=(\d+)", self.text())
        if not found:
            return (0, 0)
        sess, mesg = found[-1]
        return (max(0, int(sess) - self.probes), int(mesg))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.out.close()


class CountingSink:
    """A minimal ESMTP sink (PIPELINING) on its own asyncio loop that counts
    concurrent connections: one counts from accept until its 221 is written
    or it is lost."""

    def __init__(self, latency_ms=0):
        self.latency = latency_ms / 1000.0
        self.active = 0
        self.max_active = 0
        self.connections = 0
        self.messages = 0
        self.per_conn = []
        self.times = []
        self.loop = asyncio.new_event_loop()
        self.port = free_port()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError("counting sink did not start")

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._session, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_forever()

    async def _session(self, reader, writer):
        self.connections += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        counted = True
        msgs = 0
        try:
            writer.write(b"220 count.test ESMTP\r\n")
            while True:
                line = await reader.readline()
                if not line:
                    break
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-count.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                 b"250 ENHANCEDSTATUSCODES\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    while True:
                        body_line = await reader.readline()
                        if not body_line or body_line == b".\r\n":
                            break
                    if not body_line:
                        break
                    if self.latency:
                        await asyncio.sleep(self.latency)
                    self.messages += 1
                    self.times.append(time.monotonic())
                    msgs += 1
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    self.active -= 1
                    counted = False
                    break
                else:
                    writer.write(b"250 2.0.0 Ok\r\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if counted:
                self.active -= 1
            self.per_conn.append(msgs)
            writer.close()

    def stop(self):
        async def shutdown():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()


def dns_free_port():
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")


def start_dnsmasq(tmpdir, zone):
    """dnsmasq on 127.0.0.1 and a free port, answering only from zone."""
    from test_dns import raw_query
    for attempt in range(5):
        port = dns_free_port()
        proc = subprocess.Popen(
            [DNSMASQ, "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             "--port=%d" % port, "--listen-address=127.0.0.1", "--bind-interfaces",
             "--keep-in-foreground", "--pid-file=", "--log-queries",
             "--log-facility=" + os.path.join(tmpdir, "dnsmasq.log")] + zone,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:
            if raw_query(port, "ready.test", 1, 0.2) is not None:
                return proc, port
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    raise RuntimeError("dnsmasq did not start")


# --- sending to ringmta ----------------------------------------------------------


def send_data(d, sender, rcpts, body, mail_params="", rcpt_params=None):
    """One transaction by DATA with the body dot-stuffed here; returns the qid.
    rcpt_params: address -> " NOTIFY=..." appended to that RCPT."""
    s = d.connect()
    try:
        assert s.cmd("EHLO client.test") == 250
        assert s.cmd("MAIL FROM:<%s>%s" % (sender, mail_params)) == 250
        for r in rcpts:
            assert s.cmd("RCPT TO:<%s>%s" % (r, (rcpt_params or {}).get(r, ""))) == 250
        assert s.cmd("DATA") == 354
        s.send(stuff(body) + b".\r\n")
        code, texts = s.reply()
        assert code == 250, (code, texts)
        s.cmd("QUIT")
        return re.search(r"queued as ([0-9a-f]{16})", texts[-1]).group(1)
    finally:
        s.close()


def send_bdat(d, sender, rcpts, chunks, mail_params=""):
    """One transaction by BDAT, the chunks as given (raw); returns the qid."""
    s = d.connect()
    try:
        assert s.cmd("EHLO client.test") == 250
        assert s.cmd("MAIL FROM:<%s>%s" % (sender, mail_params)) == 250
        for r in rcpts:
            assert s.cmd("RCPT TO:<%s>" % r) == 250
        for i, c in enumerate(chunks):
            last = " LAST" if i == len(chunks) - 1 else ""
            s.send(("BDAT %d%s\r\n" % (len(c), last)).encode() + c)
            code, texts = s.reply()
            assert code == 250, (code, texts)
        s.cmd("QUIT")
        return re.search(r"queued as ([0-9a-f]{16})", texts[-1]).group(1)
    finally:
        s.close()


def long_body(tag, size, seed):
    """A CRLF body of about size octets: lines of 0..998 octets, some of
    them starting with dots, a lone dot line now and then."""
    rng = random.Random(seed)
    out = [b"Subject: long " + tag + b"\r\n", b"\r\n"]
    n = 0
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .-"
    while n < size:
        k = rng.choice([0, 1, 2, 40, 76, 200, 998, rng.randrange(0, 999)])
        line = bytes(rng.choice(alphabet) for _ in range(k))
        r = rng.random()
        if r < 0.05:
            line = b"." + line[1:] if line else b"."
        elif r < 0.07:
            line = b"."
        elif r < 0.09:
            line = b".." + line[2:]
        out.append(line + b"\r\n")
        n += len(line) + 2
    return b"".join(out)


# --- the tests ---------------------------------------------------------------------


@unittest.skipUnless(HAVE_AIOSMTPD, "python3-aiosmtpd not installed")
class CaptureTests(DaemonTest):
    """Byte-exact bodies and envelopes through a relayhost that captures."""

    def capture(self, **kw):
        c = Capture(**kw)
        self.addCleanup(c.stop)
        return c

    def relay_daemon(self, cap, **settings):
        return self.daemon(relayhost="[127.0.0.1]:%d" % cap.port, **settings)

    def test_relayhost_bodies_and_envelopes_byte_for_byte(self):
        self.check_bodies_and_envelopes_byte_for_byte()

    def test_buffered_receive_bodies_and_envelopes_byte_for_byte(self):
        # spool_receive=buffered: bodies go through the worker's receive
        # buffers and pwrite into the segment; what is stored and delivered
        # is the same, chunk boundaries and interleaving included.
        self.check_bodies_and_envelopes_byte_for_byte(spool_receive="buffered")

    def check_bodies_and_envelopes_byte_for_byte(self, **settings):
        cap = self.capture()
        d = self.relay_daemon(cap, **settings)
        sent = {}   # subject tag -> (sender, rcpts, body, mail_params)

        def go(tag, sender, rcpts, body, params=""):
            sent[tag] = (sender, rcpts, body, params)
            send_data(d, sender, rcpts, body, params)

        go(b"dots", "dots@example.org", ["d1@dest.test"],
           b"Subject: dots\r\n\r\n.\r\n..\r\n...\r\n.leading dot\r\n..two\r\nx.\r\n"
           b" .\r\nend\r\n.\r\n")     # the last line is a lone dot
        go(b"8bit", "eight@example.org", ["e1@dest.test"],
           b"Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9 \xe2\x82\xac \xff\x80\x01\r\n"
           b"\xc3\xa9.\r\n.\xc3\xa9\r\n", " BODY=8BITMIME")
        go(b"empty", "empty@example.org", ["m1@dest.test"], b"")
        go(b"multi", "multi@example.org",
           ["r1@dest.test", "r2@dest.test", "r3@dest.test"],
           b"Subject: multi\r\n\r\nfor three\r\n")
        go(b"longline", "ll@example.org", ["l1@dest.test"],
           b"Subject: longline\r\n\r\n" + b"x" * 998 + b"\r\n." + b"y" * 997 + b"\r\n")
        go(b"null", "", ["n1@dest.test"], b"Subject: null sender\r\n\r\nhi\r\n")

        # Two long bodies sent at the same time, so their spool chunks
        # interleave in the segment; each is several chunks (> 64 KiB).
        bodies = [long_body(b"big%d" % i, 300000 + 7777 * i, i) for i in range(2)]
        sessions = []
        for i, body in enumerate(bodies):
            s = d.connect()
            assert s.cmd("EHLO client.test") == 250
            assert s.cmd("MAIL FROM:<big%d@example.org>" % i) == 250
            assert s.cmd("RCPT TO:<big%d@dest.test>" % i) == 250
            assert s.cmd("DATA") == 354
            sessions.append((s, stuff(body) + b".\r\n"))
            sent[b"big%d" % i] = ("big%d@example.org" % i, ["big%d@dest.test" % i], body, "")
        off = 0
        while any(off < len(w) for _, w in sessions):
            for s, w in sessions:
                if off < len(w):
                    s.send(w[off:off + 16384])
            off += 16384
        for s, _ in sessions:
            code, texts = s.reply()
            self.assertEqual(code, 250, texts)
            s.close()

        wait_for(lambda: len(cap.mail(True)) >= len(sent), 30, "all messages at the capture")
        wait_spool_empty(d, 20)
        got = {}
        for t in cap.mail(True):
            content = strip_received(t["content"])
            key = next(k for k, v in sent.items() if v[0] == t["mail_from"])
            self.assertNotIn(key, got, "delivered twice: %r" % key)
            got[key] = (t, content)
        self.assertEqual(set(got), set(sent))
        for key, (sender, rcpts, body, params) in sent.items():
            t, content = got[key]
            self.assertEqual(t["mail_from"], sender, key)
            self.assertEqual(sorted(t["rcpts"]), sorted(rcpts), key)
            self.assertEqual(content, body, "body of %r differs" % key)
        self.assertIn("BODY=8BITMIME", [o.upper() for o in got[b"8bit"][0]["mail_options"]])
        self.assertFalse(any("BODY=" in o.upper() for o in got[b"dots"][0]["mail_options"]))
        for k in (b"big0", b"big1"):
            self.assertGreater(len(got[k][1]), 256 * 1024)
        lines = deliveries(d)
        self.assertEqual(len([l for l in lines if l[5] == "sent"]),
                         sum(len(v[1]) for v in sent.values()))
        self.assertTrue(all(l[2] == "127.0.0.1[127.0.0.1]:%d" % cap.port for l in lines),
                        lines[:3])

    def test_zero_copy_send_delivers_large_bodies_byte_for_byte(self):
        # smtp_send_zerocopy=yes: bodies go out by SEND_ZC in pieces of 64 KiB
        # and more even on loopback; what arrives is exactly what was sent.
        cap = self.capture()
        d = self.relay_daemon(cap, smtp_send_zerocopy="yes")
        bodies = {b"zc-big": long_body(b"zc-big", 3 << 20, 11),
                  b"zc-mid": long_body(b"zc-mid", 150000, 12),
                  b"zc-small": b"Subject: long zc-small\r\n\r\nunder the threshold\r\n"}
        for tag, body in bodies.items():
            send_data(d, "zc@example.org", ["z@dest.test"], body)
        wait_for(lambda: len(cap.mail()) >= 3, 30, "three bodies at the next hop")
        got = {}
        for t in cap.mail():
            content = strip_received(t["content"])
            got[re.search(rb"Subject: long (\S+)", content).group(1)] = content
        self.assertEqual(sorted(got), sorted(bodies))
        for tag, body in bodies.items():
            self.assertEqual(len(got[tag]), len(body), tag)
            self.assertEqual(got[tag], body, "body of %r differs" % tag)
        self.assertNotIn("zero-copy send not supported", d.log())

    def test_bdat_received_mail_goes_out_by_data_dot_stuffed(self):
        self.check_bdat_goes_out_by_data_dot_stuffed()

    def test_buffered_receive_bdat_goes_out_by_data_dot_stuffed(self):
        self.check_bdat_goes_out_by_data_dot_stuffed(spool_receive="buffered")

    def check_bdat_goes_out_by_data_dot_stuffed(self, **settings):
        cap = self.capture()
        d = self.relay_daemon(cap, **settings)
        cases = {
            "bdat-dots@example.org": [b"Subject: bdat dots\r\n\r\n.\r\n..\r\n.lead",
                                      b"ing\r\nmid\r\n.", b"\r\n...x\r\n.\r\n"],
            "bdat-one@example.org": [b"Subject: one chunk\r\n\r\nplain\r\n.dot\r\n"],
            "bdat-empty@example.org": [b""],
            "bdat-8bit@example.org": [b"Subject: 8\r\n\r\n\xc3\xa9\r\n.\xff\r\n"],
        }
        big = long_body(b"bdat", 200000, 7)
        cases["bdat-big@example.org"] = [big[i:i + 65536] for i in range(0, len(big), 65536)]
        for sender, chunks in cases.items():
            params = " BODY=8BITMIME" if "8bit" in sender else ""
            send_bdat(d, sender, ["to-" + sender.split("@")[0] + "@dest.test"], chunks, params)
        wait_for(lambda: len(cap.mail()) >= len(cases), 30, "the BDAT messages")
        wait_spool_empty(d, 20)
        by_sender = {t["mail_from"]: t for t in cap.mail()}
        self.assertEqual(set(by_sender), set(cases))
        for sender, chunks in cases.items():
            self.assertEqual(strip_received(by_sender[sender]["content"]), b"".join(chunks),
                             sender)
        self.assertIn("BODY=8BITMIME",
                      [o.upper() for o in by_sender["bdat-8bit@example.org"]["mail_options"]])

    def test_4xx_then_success_is_one_retry_and_5xx_is_not_retried(self):
        cap = self.capture(tempfail_first=["later@dest.test"], reject=["bad@dest.test"],
                           data_tempfail_first=[b"X-Marker: data-451"])
        d = self.relay_daemon(cap, minimal_backoff_time="1s", maximal_backoff_time="2s")
        t0 = time.monotonic()
        q1 = send_data(d, "s1@example.org", ["ok@dest.test", "later@dest.test", "bad@dest.test"],
                       b"Subject: mixed\r\n\r\nthree recipients\r\n")
        q2 = send_data(d, "s2@example.org", ["whole@dest.test"],
                       b"Subject: data\r\nX-Marker: data-451\r\n\r\nfirst try refused\r\n")
        wait_spool_empty(d, 20)
        elapsed = time.monotonic() - t0
        # Longer than the maximal backoff: no attempt may still come.
        time.sleep(2.5)

        self.assertEqual(cap.rcpts("ok@dest.test"), [250])
        self.assertEqual(cap.rcpts("later@dest.test"), [451, 250])
        self.assertEqual(cap.rcpts("bad@dest.test"), [550], "a 5xx recipient is not retried")
        self.assertEqual(cap.rcpts("whole@dest.test"), [250, 250])
        self.assertEqual([c for m, c, _ in cap.data_log if m], [451, 250])
        times = [t for a, _, t in cap.rcpt_log if a == "later@dest.test"]
        self.assertGreaterEqual(times[1] - times[0], 0.8, "retried before minimal_backoff_time")
        self.assertLess(elapsed, 15)

        got = {}
        for t in cap.mail():
            for r in t["rcpts"]:
                got.setdefault(r, []).append(t)
        self.assertEqual({r: len(v) for r, v in got.items()},
                         {"ok@dest.test": 1, "later@dest.test": 1, "whole@dest.test": 1})

        # (a bounce to s1@example.org has lines of its own: other qids)
        lines = [(l[1], l[3], l[4][0], l[5]) for l in deliveries(d) if l[0] in (q1, q2)]
        self.assertEqual(sorted(l for l in lines if l[0] != "whole@dest.test"), sorted([
            ("ok@dest.test", 1, "2", "sent"),
            ("later@dest.test", 1, "4", "deferred"),
            ("later@dest.test", 2, "2", "sent"),
            ("bad@dest.test", 1, "5", "bounced"),
        ]))
        self.assertEqual([l for l in lines if l[0] == "whole@dest.test"],
                         [("whole@dest.test", 1, "4", "deferred"),
                          ("whole@dest.test", 2, "2", "sent")])
        bad = [l for l in deliveries(d) if l[1] == "bad@dest.test"][0]
        self.assertEqual(bad[0], q1)
        self.assertIn("550", bad[6])

    def test_finished_segments_are_removed_and_never_come_back(self):
        # 1 MiB segments, ~4 MiB of mail delivered: the spool keeps only the
        # segments something still needs (current and spare per worker, and
        # the one holding a message that keeps being deferred). After kill -9
        # nothing delivered is delivered again, and the deferred one is kept.
        cap = self.capture(tempfail_always=["pinned@dest.test"])
        d = self.relay_daemon(cap, spool_segment_size="1M", minimal_backoff_time="1s",
                              maximal_backoff_time="1s")
        pinned = send_data(d, "s@example.org", ["pinned@dest.test"],
                           b"Subject: pinned\r\n\r\nstays\r\n")
        n, filler = 500, b"x" * 76 + b"\r\n"
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as c:
            for i in range(n):
                c.sendmail("s@example.org", ["ok@dest.test"],
                           b"Subject: m%d\r\n\r\n" % i + filler * 100)
        wait_for(lambda: len(cap.mail()) >= n, 60, "every message at the next hop")
        segdir = os.path.join(d.spool, "seg")

        def segs():
            return sorted(f for f in os.listdir(segdir) if f.endswith(".seg"))
        made = max(int(f.split("-")[1][:-4], 16) for f in segs())
        self.assertGreaterEqual(made, 4, "the mail did not fill several segments: %s" % segs())
        wait_for(lambda: len(segs()) <= 5, 10, "finished segments removed (left: %s)" % segs())
        note("%d messages, segments up to seq %d, %d left: %s"
             % (n, made, len(segs()), segs()))
        # The last messages are retired by their segment's owner on its next
        # loop turn (a DONE beside the COMMIT, at most a tick away): until
        # then the spool still lists them.
        listed = lambda: [r[0] for r in d.spool_list()]
        wait_for(lambda: listed() == [pinned], 5, "only the pinned message listed",
                 interval=0.1)

        time.sleep(0.3)
        d.kill9()
        d.start()
        m = re.findall(r"recovered (\d+) queued message", d.log())
        self.assertEqual(int(m[-1]), 1)
        wait_for(lambda: len(cap.rcpts("pinned@dest.test")) >= 3, 15, "the pinned retries")
        self.assertEqual(len(cap.mail()), n, "a delivered message was delivered again")
        self.assertEqual([r[0] for r in d.spool_list()], [pinned])
        self.assertLessEqual(len(segs()), 6)

    def test_delay_notice_is_sent_once_even_across_kill9(self):
        # delay_warning_time=1s: the first retry after a second finds the
        # message old enough; its sender gets one "delayed" report naming
        # the recipient without NOTIFY (taken as FAILURE,DELAY), not the one
        # with NOTIFY=FAILURE. Later retries, and a restart after kill -9,
        # send no second notice (the RCPT_STATUS flag is durable).
        cap = self.capture(tempfail_always=["slow@dest.test", "quiet@dest.test"])
        d = self.relay_daemon(cap, minimal_backoff_time="1s", maximal_backoff_time="1s",
                              delay_warning_time="1s")
        qid = send_data(d, "s@example.org", ["ok@dest.test", "slow@dest.test", "quiet@dest.test"],
                        b"Subject: slow one\r\nMessage-ID: <delay@example.org>\r\n\r\nx\r\n",
                        rcpt_params={"quiet@dest.test": " NOTIFY=FAILURE"})

        def notices():
            return [t for t in cap.mail(with_null_sender=True) if t["mail_from"] == ""]
        wait_for(lambda: notices(), 15, "the delay notice")
        n = notices()[0]
        self.assertEqual(n["rcpts"], ["s@example.org"])
        text = n["content"].decode()
        self.assertIn("multipart/report; report-type=delivery-status", text)
        self.assertEqual(re.findall(r"(?m)^Final-Recipient: rfc822; *(\S+)", text),
                         ["slow@dest.test"])
        self.assertRegex(text, r"(?m)^Action: delayed\r?$")
        self.assertRegex(text, r"(?m)^Status: 4\.2\.1\r?$")
        self.assertRegex(text, r"(?m)^Will-Retry-Until: ")
        self.assertIn("mailbox busy", text)
        self.assertIn("Message-ID: <delay@example.org>", text, "headers of the original")
        self.assertIn("sender delay notification", d.log())

        # Two more retries, then a crash and two retries after the restart.
        wait_for(lambda: len(cap.rcpts("slow@dest.test")) >= 4, 15, "more retries")
        time.sleep(0.3)         # the RCPT_STATUS record's fsync
        d.kill9()
        d.start()
        k = len(cap.rcpts("slow@dest.test"))
        wait_for(lambda: len(cap.rcpts("slow@dest.test")) >= k + 2, 15, "retries after restart")
        self.assertEqual(len(notices()), 1, "one delay notice, never repeated")
        self.assertEqual(cap.rcpts("ok@dest.test"), [250])
        self.assertEqual([(r[0], r[2]) for r in d.spool_list()], [(qid, 3)])

    def test_deferred_recipient_keeps_its_retry_time_across_kill9(self):
        # The deferral is recorded with its next attempt time: after a crash
        # the recipient waits for it instead of being due again at once.
        cap = self.capture(tempfail_first=["slow@dest.test"])
        d = self.relay_daemon(cap, minimal_backoff_time="6s", maximal_backoff_time="6s")
        send_data(d, "s@example.org", ["slow@dest.test"], b"Subject: slow\r\n\r\nx\r\n")
        wait_for(lambda: "status=deferred" in d.log(), 10, "the deferral")
        t0 = [t for a, _, t in cap.rcpt_log if a == "slow@dest.test"][0]
        time.sleep(0.3)         # the RCPT_STATUS record's fsync
        d.kill9()
        d.start()
        wait_for(lambda: len(cap.rcpts("slow@dest.test")) >= 2, 15, "the retry")
        t1 = [t for a, _, t in cap.rcpt_log if a == "slow@dest.test"][1]
        self.assertGreaterEqual(t1 - t0, 4.5, "retried %.1f s after the deferral" % (t1 - t0))
        wait_spool_empty(d, 10)
        self.assertEqual(cap.rcpts("slow@dest.test"), [451, 250])

    def test_refused_connection_defers_until_the_next_hop_is_up(self):
        port = free_port()      # nothing listens yet
        d = self.daemon(relayhost="[127.0.0.1]:%d" % port, minimal_backoff_time="1s",
                        maximal_backoff_time="2s")
        qid = send_data(d, "s@example.org", ["u@dest.test", "v@dest.test"],
                        b"Subject: wait\r\n\r\nfor the server\r\n")
        wait_for(lambda: len([l for l in deliveries(d) if l[5] == "deferred"]) >= 2, 10,
                 "two deferrals")
        self.assertIn("Connection refused", [l for l in deliveries(d)][0][6])
        cap = self.capture(port=port)
        wait_spool_empty(d, 15)
        self.assertEqual([sorted(t["rcpts"]) for t in cap.mail()],
                         [["u@dest.test", "v@dest.test"]])
        sent = [l for l in deliveries(d) if l[5] == "sent"]
        self.assertEqual(sorted(l[1] for l in sent), ["u@dest.test", "v@dest.test"])
        self.assertTrue(all(l[0] == qid and l[3] >= 2 for l in sent), sent)

    def test_max_rcpt_per_transaction_splits_transactions(self):
        cap = self.capture()
        d = self.relay_daemon(cap, max_rcpt_per_transaction=2)
        rcpts = ["p%d@dest.test" % i for i in range(5)]
        body = b"Subject: five\r\n\r\nsplit me\r\n.dot\r\n"
        send_data(d, "five@example.org", rcpts, body)
        wait_for(lambda: sum(len(t["rcpts"]) for t in cap.mail()) >= 5, 20, "5 recipients")
        wait_spool_empty(d, 20)
        txns = cap.mail()
        self.assertEqual(len(txns), 3, [t["rcpts"] for t in txns])
        self.assertEqual(sorted(len(t["rcpts"]) for t in txns), [1, 2, 2])
        self.assertEqual(sorted(r for t in txns for r in t["rcpts"]), rcpts)
        for t in txns:
            self.assertEqual(t["mail_from"], "five@example.org")
            self.assertEqual(strip_received(t["content"]), body)


@unittest.skipUnless(os.access(SINK, os.X_OK), "ringmta-sink not built")
class SinkTests(DaemonTest):

    def sink(self, **kw):
        s = RingSink(self.tmpdir, **kw)
        self.addCleanup(s.stop)
        return s

    def test_bdat_to_a_chunking_peer_and_data_bodies_are_exact(self):
        """To a peer with CHUNKING, a body goes by BDAT (MAIL, RCPT, BDAT and
        the chunk in one pipelined group): received by BDAT, by DATA with no
        line stuffed, or by DATA with stuffed lines, unstuffed on the way
        out (many of them: the runs between the dots fill more than one
        send). Only a large DATA body with stuffed lines goes by DATA, as
        stored. Every body arrives exactly as it was submitted."""
        sink = self.sink(keep=True)
        d = self.daemon(relayhost="[127.0.0.1]:%d" % sink.port)
        bodies = {
            b"data@example.org": b"Subject: d\r\n\r\n.\r\n..x\r\nplain\r\n",
            b"dots@example.org": b"Subject: m\r\n\r\n" + b"".join(
                b".%d\r\n" % i for i in range(200)) + b".\r\n",
            b"plain@example.org": b"Subject: p\r\n\r\nno line starts with a dot.\r\nx. y ..\r\n",
            b"large@example.org": b"Subject: l\r\n\r\n" + b".dot\r\n" + (b"x" * 900 + b"\r\n") * 80,
        }
        bdat_chunks = [b"Subject: b\r\n\r\n.\r\n..", b"x\r\n.", b"\r\nend\r\n"]
        for sender, body in bodies.items():
            rcpts = ["p@dest.test", "q@dest.test"] if sender.startswith(b"plain") else ["x@dest.test"]
            send_data(d, sender.decode(), rcpts, body)
        send_bdat(d, "bdat@example.org", ["y@dest.test"], bdat_chunks)
        bodies[b"bdat@example.org"] = b"".join(bdat_chunks)
        wait_for(lambda: sink.messages() >= 5, 20, "five messages at the sink")
        wait_spool_empty(d, 20)
        final = sink.stop()
        self.assertEqual(final["messages"], 5)
        self.assertEqual(final["bdat_chunks"], 4, "all but the large stuffed body went by BDAT")
        kept = {}
        for name in os.listdir(sink.keep):
            if name.endswith(".env"):
                with open(os.path.join(sink.keep, name), "rb") as f:
                    env = f.read()
                with open(os.path.join(sink.keep, name[:-4] + ".eml"), "rb") as f:
                    eml = f.read()
                sender = re.search(rb"mail-from <([^>]*)>", env).group(1)
                kept[sender] = strip_received(eml)
        self.assertEqual(kept, bodies)

    def test_kill9_during_delivery_then_restart_delivers_everything(self):
        self.check_kill9_during_delivery()

    def test_kill9_during_delivery_with_buffered_receive(self):
        # Stores gathered per loop turn, finished messages retired by a DONE
        # beside their COMMIT: a crash in the middle loses nothing acknowledged
        # and brings back no finished message.
        self.check_kill9_during_delivery(spool_receive="buffered")

    def check_kill9_during_delivery(self, **extra):
        if not os.access(BENCH, os.X_OK):
            self.skipTest("ringmta-bench not built")
        seed = int(os.environ.get("DELIVERY_SEED", random.randrange(1 << 30)))
        rng = random.Random(seed)
        note("kill9 test seed %d %s" % (seed, extra))
        n = 2000
        sink = self.sink(keep=True, latency_ms=50)
        settings = dict(relayhost="[127.0.0.1]:%d" % sink.port, minimal_backoff_time="1s",
                        maximal_backoff_time="2s", **extra)
        d = self.daemon(**settings)
        dump = os.path.join(self.tmpdir, "sent")
        os.makedirs(dump)
        out = subprocess.run([BENCH, "--target", "127.0.0.1:%d" % d.port, "--sessions", "20",
                              "--messages", str(n), "--size", "2000", "--domain", "dest.test",
                              "--dump", dump, "--json"],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        sent = {name[:-4] for name in os.listdir(dump) if name.endswith(".eml")}
        self.assertEqual(len(sent), n)
        accepted = d.log().count("from=<bench@dest.test>")
        self.assertEqual(accepted, n, "every message got its 250")
        at_sink = sink.messages()
        if at_sink < n - 100:
            kill_at = rng.randrange(at_sink + 1, at_sink + (n - at_sink) * 3 // 4 + 2)
            wait_for(lambda: sink.messages() >= kill_at, 30, "%d messages at the sink" % kill_at,
                     interval=0.005)
        d.kill9()
        left = len(d.spool_list())
        note("SIGKILL with %d messages at the sink (%d when injection ended), %d still queued"
             % (sink.messages(), at_sink, left))
        if at_sink < n - 100:
            self.assertGreater(left, 0, "the kill came after delivery had finished")
        d.start()
        # Messages whose every outcome was written but not yet their RETIRED
        # are listed by the ctl, but are complete: not queued again.
        recovered = int(re.findall(r"recovered (\d+) queued message", d.log())[-1])
        self.assertLessEqual(recovered, left)
        self.assertGreater(recovered, left // 2)
        wait_spool_empty(d, 45)
        # The segments recovered at the restart are adopted; once their mail
        # is delivered and retired they go like any other (2 workers: a
        # current and a spare each are left).
        segdir = os.path.join(d.spool, "seg")
        segs = lambda: sorted(f for f in os.listdir(segdir) if f.endswith(".seg"))
        wait_for(lambda: len(segs()) <= 4, 15,
                 "the recovered segments removed once delivered (left: %s)" % segs())
        d.stop()
        final = sink.stop()
        got = {}
        for name in os.listdir(sink.keep):
            if name.endswith(".eml"):
                with open(os.path.join(sink.keep, name), "rb") as f:
                    m = re.search(rb"Subject: ringmta-bench message ([0-9a-f]{16})", f.read())
                self.assertIsNotNone(m, name)
                got[m.group(1).decode()] = got.get(m.group(1).decode(), 0) + 1
        lost = sent - set(got)
        self.assertEqual(lost, set(), "%d messages lost" % len(lost))
        dups = sum(v - 1 for v in got.values())
        note("after restart: %d delivered, %d duplicates, %d connections in all"
             % (final["messages"], dups, final["connections"]))
        self.assertLess(dups, 200, "duplicates should be only what was in flight")

    def test_reply_mix_every_recipient_ends_sent_or_bounced_once(self):
        # 421 greetings, 4xx and 5xx RCPT replies, 4xx after the body: every
        # recipient ends with exactly one final line, the sink's count agrees.
        sink = self.sink(extra=["--connect-421", "10", "--rcpt-4xx", "10", "--rcpt-5xx", "5",
                                "--data-4xx", "10", "--seed", "7"])
        d = self.daemon(relayhost="[127.0.0.1]:%d" % sink.port, minimal_backoff_time="1s",
                        maximal_backoff_time="2s")
        smtp_source(d.port, 300, 10, "u@mix.test")
        wait_spool_empty(d, 40)
        time.sleep(0.3)
        final = sink.stop()
        lines = deliveries(d)
        finals = {}
        for qid, to, _, attempt, dsn, status, text in lines:
            if status != "deferred":
                self.assertNotIn((qid, to), finals, "two final outcomes for %s %s" % (qid, to))
                finals[(qid, to)] = (status, dsn)
        originals = [k for k in finals if k[1] == "u@mix.test"]
        self.assertEqual(len(originals), 300)
        sent = sum(1 for v in finals.values() if v[0] == "sent")
        bounced = sum(1 for k, v in finals.items() if v[0] == "bounced" and k[1] == "u@mix.test")
        deferred = sum(1 for l in lines if l[5] == "deferred")
        note("reply mix: %d sent (bounces included), %d bounced, %d deferrals, %d connections"
             % (sent, bounced, deferred, final["connections"]))
        self.assertEqual(final["messages"], sent)
        self.assertGreater(deferred, 0)
        self.assertGreater(bounced, 0)
        self.assertTrue(all(v[1].startswith("5") for v in finals.values() if v[0] == "bounced"))

    def test_max_messages_per_connection_is_honoured(self):
        sink = self.sink()
        d = self.daemon(relayhost="[127.0.0.1]:%d" % sink.port, max_messages_per_connection=25)
        smtp_source(d.port, 500, 10, "u@dest.test")
        wait_for(lambda: sink.messages() >= 500, 30, "500 messages at the sink")
        wait_spool_empty(d, 20)
        time.sleep(0.3)
        final = sink.stop()
        self.assertEqual(final["messages"], 500)
        self.assertLessEqual(final["msgs_per_conn"]["max"], 25)
        self.assertGreaterEqual(final["connections"], 20)
        self.assertLess(final["connections"], 100)


@unittest.skipUnless(os.access(SMTP_SINK, os.X_OK) and os.access(SMTP_SOURCE, os.X_OK),
                     "Postfix smtp-sink/smtp-source not installed")
class BatchingTests(DaemonTest):

    def test_smtp_source_5000_to_smtp_sink_over_few_connections(self):
        sink = PostfixSink(self.tmpdir)
        self.addCleanup(sink.stop)
        d = self.daemon(relayhost="[127.0.0.1]:%d" % sink.port)
        t0 = time.monotonic()
        smtp_source(d.port, 5000, 20, "b@example.net")
        accepted_s = time.monotonic() - t0
        wait_spool_empty(d, 60)
        drained_s = time.monotonic() - t0
        wait_for(lambda: sink.counters()[1] >= 5000, 10, "5000 messages at smtp-sink")
        # Idle connections are closed with QUIT on the way out; smtp-sink
        # counts a session when it ends, so the count is complete after this.
        t1 = time.monotonic()
        self.assertEqual(d.stop(), 0)
        self.assertLess(time.monotonic() - t1, 5)
        time.sleep(0.3)
        sessions, messages = sink.counters()
        sent = [l for l in deliveries(d) if l[5] == "sent"]
        note("smtp-source 5000: accepted in %.1f s, queue empty after %.1f s; "
             "smtp-sink saw %d messages over %d sessions"
             % (accepted_s, drained_s, messages, sessions))
        self.assertEqual(messages, 5000)
        self.assertEqual(len(sent), 5000)
        self.assertEqual(len({l[0] for l in sent}), 5000)
        self.assertLess(sessions, 500, "connections are reused")
        self.assertGreaterEqual(sessions, 50, "max_messages_per_connection (100) holds")
        self.assertFalse([l for l in deliveries(d) if l[5] != "sent"])

    def test_1000_messages_max_connections_3(self):
        sink = CountingSink(latency_ms=3)
        self.addCleanup(sink.stop)
        tmap = os.path.join(self.tmpdir, "transport")
        with open(tmap, "w") as f:
            f.write("one.test [127.0.0.1]:%d\n" % sink.port)
        d = self.daemon(transport_map=tmap, max_connections=3)
        t0 = time.monotonic()
        smtp_source(d.port, 1000, 10, "u@one.test")
        wait_for(lambda: sink.messages >= 1000, 45, "1000 messages at the sink")
        wait_spool_empty(d, 20)
        note("1000 to one domain, max_connections=3: %.1f s, %d connections, "
             "at most %d at once" % (time.monotonic() - t0, sink.connections, sink.max_active))
        self.assertEqual(sink.messages, 1000)
        self.assertLessEqual(sink.max_active, 3)
        self.assertGreaterEqual(sink.max_active, 2, "the destination got some concurrency")
        self.assertLess(sink.connections, 100, "far fewer connections than messages")

    def test_max_connections_holds_per_next_hop_across_domains(self):
        # Eight recipient domains, one relayhost: the limit is the next
        # hop's, whichever workers the domains belong to.
        sink = CountingSink(latency_ms=3)
        self.addCleanup(sink.stop)
        d = self.daemon(relayhost="[127.0.0.1]:%d" % sink.port, max_connections=3)
        procs = [subprocess.Popen([SMTP_SOURCE, "-s", "3", "-m", "100", "-f", "a@example.org",
                                   "-t", "u@d%d.test" % i, "127.0.0.1:%d" % d.port],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i in range(8)]
        for p in procs:
            self.assertEqual(p.wait(60), 0)
        wait_for(lambda: sink.messages >= 800, 45, "800 messages at the sink")
        wait_spool_empty(d, 20)
        note("800 to 8 domains via one relayhost, max_connections=3: %d connections, "
             "at most %d at once" % (sink.connections, sink.max_active))
        self.assertEqual(sink.messages, 800)
        self.assertLessEqual(sink.max_active, 3)

    def test_max_message_rate_is_honoured(self):
        # 100/s with a burst of one second's worth: 300 messages take 2 s.
        sink = CountingSink()
        self.addCleanup(sink.stop)
        d = self.daemon(relayhost="[127.0.0.1]:%d" % sink.port, max_message_rate=100)
        smtp_source(d.port, 300, 10, "u@rate.test")
        wait_for(lambda: sink.messages >= 300, 20, "300 messages at the sink")
        wait_spool_empty(d, 10)
        t = sink.times
        span = t[-1] - t[0]
        busiest = max(sum(1 for u in t[i:] if u - t[i] < 1.0) for i in range(len(t)))
        note("300 at max_message_rate=100: %.2f s first to last, at most %d in one second"
             % (span, busiest))
        self.assertEqual(sink.messages, 300)
        self.assertGreaterEqual(span, 1.7)
        self.assertLess(span, 8)
        self.assertLessEqual(busiest, 205)


@unittest.skipUnless(os.access(DNSMASQ, os.X_OK) and HAVE_AIOSMTPD,
                     "dnsmasq or aiosmtpd not installed")
class MxTests(DaemonTest):

    ZONE = [
        "--local=/test/",
        "--local-ttl=30",
        "--mx-host=mx.test,mail.mx.test,10",
        "--mx-host=mx.test,backup.mx.test,20",
        "--host-record=mail.mx.test,127.0.0.1",
        "--host-record=backup.mx.test,127.0.0.1",
        "--host-record=implicit.test,127.0.0.1",       # no MX: the domain itself
        "--mx-host=nullmx.test,.,0",                   # RFC 7505
    ]

    def test_deliver_by_mx_null_mx_and_nxdomain(self):
        proc, dns_port = start_dnsmasq(self.tmpdir, self.ZONE)
        self.addCleanup(lambda: (proc.kill(), proc.wait()))
        cap = Capture()
        self.addCleanup(cap.stop)
        d = self.daemon(relayhost="", smtp_port=cap.port,
                        dns_servers="127.0.0.1:%d" % dns_port)
        send_data(d, "s@mx.test", ["u@mx.test", "v@mx.test"], b"Subject: by mx\r\n\r\nhi\r\n")
        send_data(d, "s@mx.test", ["w@implicit.test"], b"Subject: implicit\r\n\r\nhi\r\n")
        send_data(d, "s@mx.test", ["x@nullmx.test"], b"Subject: null mx\r\n\r\nhi\r\n")
        send_data(d, "s@mx.test", ["y@nx.test"], b"Subject: nx\r\n\r\nhi\r\n")
        send_data(d, "s@mx.test", ["z@mx.test", "q@nx.test"], b"Subject: both\r\n\r\nhi\r\n")
        wait_spool_empty(d, 20)
        by_rcpt = {}
        for t in cap.mail():
            for r in t["rcpts"]:
                by_rcpt.setdefault(r, []).append(t)
        self.assertEqual(sorted(by_rcpt), ["u@mx.test", "v@mx.test", "w@implicit.test",
                                           "z@mx.test"])
        self.assertEqual(len(by_rcpt["u@mx.test"]), 1)
        self.assertIs(by_rcpt["u@mx.test"][0], by_rcpt["v@mx.test"][0], "one transaction")
        lines = {l[1]: l for l in deliveries(d)}
        self.assertEqual(lines["u@mx.test"][2], "mail.mx.test[127.0.0.1]:%d" % cap.port)
        self.assertEqual(lines["w@implicit.test"][2], "implicit.test[127.0.0.1]:%d" % cap.port)
        self.assertEqual((lines["x@nullmx.test"][4], lines["x@nullmx.test"][5]),
                         ("5.1.10", "bounced"))
        self.assertEqual((lines["y@nx.test"][4], lines["y@nx.test"][5]), ("5.1.2", "bounced"))
        self.assertEqual(lines["q@nx.test"][5], "bounced")
        self.assertEqual(lines["z@mx.test"][5], "sent")
        self.assertEqual(len([l for l in deliveries(d) if l[1] == "x@nullmx.test"]), 1)

    def test_dns_failure_defers_and_keeps_the_message(self):
        # The harness's dns_servers is a closed local port: every lookup fails.
        d = self.daemon(relayhost="", minimal_backoff_time="60s")
        qid = send_data(d, "s@example.org", ["u@mx.test"], b"Subject: later\r\n\r\nhi\r\n")
        line = wait_for(lambda: [l for l in deliveries(d) if l[1] == "u@mx.test"], 15,
                        "a deferral")[0]
        self.assertEqual((line[0], line[4][0], line[5]), (qid, "4", "deferred"))
        time.sleep(0.5)
        self.assertEqual([r[0] for r in d.spool_list()], [qid])
        self.assertNotIn("status=bounced", d.log())


# --- MX fallback: two MX hosts on two loopback addresses ------------------------

MX1, MX2 = "127.0.0.2", "127.0.0.3"


def ipv6_loopback_works():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            s.listen(1)
            socket.create_connection(("::1", s.getsockname()[1]), timeout=2).close()
        return True
    except OSError:
        return False


def mx_port(addrs):
    """A TCP port free on every one of addrs right now (the relay's
    smtp_port is one port for all MX hosts)."""
    for _ in range(50):
        socks = []
        try:
            first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(first)
            first.bind((addrs[0], 0))
            port = first.getsockname()[1]
            for a in addrs[1:]:
                s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET,
                                  socket.SOCK_STREAM)
                socks.append(s)
                s.bind((a, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no port free on all of %s" % (addrs,))


class DownHost:
    """addr:port bound and never listened on: connections are refused (RST)
    and nobody else can take the port there while the test runs."""

    def __init__(self, addr, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((addr, port))

    def stop(self):
        self.sock.close()


class BlackHole:
    """addr:port that never completes a handshake: a listen(0) socket whose
    one-entry accept queue is kept full, so the kernel drops further SYNs and
    a connect can only time out."""

    def __init__(self, addr, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((addr, port))
        self.sock.listen(0)
        self.fillers = [socket.create_connection((addr, port), timeout=2)]
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.3)
        try:
            probe.connect((addr, port))
            self.black = False      # this kernel queued it anyway
        except socket.timeout:
            self.black = True
        except OSError:
            self.black = False
        finally:
            probe.close()

    def stop(self):
        for s in self.fillers:
            s.close()
        self.sock.close()


class GreetingPeer:
    """Answers every connection with one greeting line (421 or 554...), then
    221 to QUIT (RFC 5321 3.1: the client says QUIT after a refusal) and
    closes; with close_at_once, closes right after the greeting."""

    def __init__(self, addr, port, greeting, close_at_once=False):
        self.greeting = greeting
        self.close_at_once = close_at_once
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((addr, port))
        self.sock.listen(16)
        self.lock = threading.Lock()
        self.connections = 0
        self.commands = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _session(self, c):
        try:
            c.settimeout(10)
            c.sendall(self.greeting.encode() + b"\r\n")
            if self.close_at_once:
                return
            f = c.makefile("rb")
            while True:
                line = f.readline()
                if not line:
                    return
                with self.lock:
                    self.commands.append(line.strip().decode(errors="replace"))
                if line[:4].upper() == b"QUIT":
                    c.sendall(b"221 2.0.0 bye\r\n")
                    return
                c.sendall(b"503 5.5.1 refused at the greeting\r\n")
        except OSError:
            return
        finally:
            c.close()

    def stop(self):
        self.sock.close()


@unittest.skipUnless(os.access(DNSMASQ, os.X_OK) and HAVE_AIOSMTPD,
                     "dnsmasq or aiosmtpd not installed")
class MxFallbackTests(DaemonTest):
    """fb.test has MX mx1.fb.test (10) -> 127.0.0.2 and mx2.fb.test (20) ->
    127.0.0.3, both on smtp_port; v6.test's one MX host has A 127.0.0.2 and
    AAAA ::1. Every daemon has minimal_backoff_time=60s unless a test needs
    the retry, so a delivery seen within seconds happened in the first
    attempt, and smtp_connect_timeout=1s bounds a connect that hangs."""

    ZONE = [
        "--local=/test/",
        "--local-ttl=30",
        "--mx-host=fb.test,mx1.fb.test,10",
        "--mx-host=fb.test,mx2.fb.test,20",
        "--host-record=mx1.fb.test," + MX1,
        "--host-record=mx2.fb.test," + MX2,
        "--mx-host=v6.test,dual.v6.test,10",
        "--host-record=dual.v6.test,%s,::1" % MX1,
    ]

    def setUp(self):
        super().setUp()
        proc, self.dns_port = start_dnsmasq(self.tmpdir, self.ZONE)
        self.addCleanup(lambda: (proc.kill(), proc.wait()))

    def relay(self, port, **settings):
        s = dict(relayhost="", smtp_port=port, dns_servers="127.0.0.1:%d" % self.dns_port,
                 minimal_backoff_time="60s", maximal_backoff_time="60s",
                 smtp_connect_timeout="1s", smtp_helo_timeout="5s")
        s.update(settings)
        return self.daemon(**s)

    def stopped(self, obj):
        self.addCleanup(obj.stop)
        return obj

    def capture(self, host, port, **kw):
        return self.stopped(Capture(host=host, port=port, **kw))

    def lines_for(self, d, qid):
        return [l for l in deliveries(d) if l[0] == qid]

    def assert_sent_by_mx2_in_first_attempt(self, d, qid, cap, port, rcpts, t0):
        wait_spool_empty(d, 10)
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 6, "took %.1f s: a retry, not the same attempt" % elapsed)
        self.assertEqual([sorted(t["rcpts"]) for t in cap.mail()], [sorted(rcpts)])
        lines = self.lines_for(d, qid)
        self.assertEqual(sorted((l[1], l[2], l[3], l[5]) for l in lines),
                         sorted((r, "mx2.fb.test[%s]:%d" % (MX2, port), 1, "sent")
                                for r in rcpts), lines)
        return elapsed

    # (a)
    def test_preferred_mx_refusing_connections_falls_back_in_the_same_attempt(self):
        port = mx_port([MX1, MX2])
        self.stopped(DownHost(MX1, port))
        cap = self.capture(MX2, port)
        d = self.relay(port)
        t0 = time.monotonic()
        qid = send_data(d, "s@example.org", ["u@fb.test", "v@fb.test"],
                        b"Subject: fallback\r\n\r\nmx1 is down\r\n")
        elapsed = self.assert_sent_by_mx2_in_first_attempt(
            d, qid, cap, port, ["u@fb.test", "v@fb.test"], t0)
        log = d.log()
        self.assertIn("connect to mx1.fb.test[%s]:%d failed: Connection refused" % (MX1, port),
                      log)
        self.assertLess(log.index("connect to mx1.fb.test"), log.index("relay=mx2.fb.test"))
        self.assertNotIn("status=deferred", log)
        note("mx1 refused, delivered by mx2 in %.2f s" % elapsed)

    # (a), a preferred MX that never answers the SYN
    def test_preferred_mx_timing_out_falls_back_after_smtp_connect_timeout(self):
        port = mx_port([MX1, MX2])
        hole = self.stopped(BlackHole(MX1, port))
        if not hole.black:
            self.skipTest("cannot make a connect time out on loopback here")
        cap = self.capture(MX2, port)
        d = self.relay(port, smtp_connect_timeout="1s")
        t0 = time.monotonic()
        qid = send_data(d, "s@example.org", ["u@fb.test"], b"Subject: slow mx1\r\n\r\nx\r\n")
        elapsed = self.assert_sent_by_mx2_in_first_attempt(d, qid, cap, port, ["u@fb.test"], t0)
        self.assertGreaterEqual(elapsed, 0.9, "mx2 before mx1's connect timed out")
        self.assertIn("connect to mx1.fb.test[%s]:%d failed: timed out" % (MX1, port), d.log())
        note("mx1 silent, delivered by mx2 in %.2f s (smtp_connect_timeout=1s)" % elapsed)

    # (b)
    def test_preferred_mx_421_greeting_falls_back_in_the_same_attempt(self):
        port = mx_port([MX1, MX2])
        peer = self.stopped(GreetingPeer(MX1, port, "421 4.3.2 mx1 too busy"))
        cap = self.capture(MX2, port)
        d = self.relay(port)
        t0 = time.monotonic()
        qid = send_data(d, "s@example.org", ["u@fb.test"], b"Subject: busy mx1\r\n\r\nx\r\n")
        self.assert_sent_by_mx2_in_first_attempt(d, qid, cap, port, ["u@fb.test"], t0)
        self.assertEqual(peer.connections, 1)
        # 421 is the server closing the channel (RFC 5321 3.8): the relay
        # closes at once, without QUIT (core/smtp_client.c smtpc_reply_done).
        self.assertEqual(peer.commands, [])
        self.assertIn("mx1.fb.test[%s]:%d: session failed" % (MX1, port), d.log())
        self.assertIn("mx1 too busy", d.log())

    def test_preferred_mx_closing_after_421_greeting_falls_back(self):
        port = mx_port([MX1, MX2])
        peer = self.stopped(GreetingPeer(MX1, port, "421 4.3.2 going away",
                                         close_at_once=True))
        cap = self.capture(MX2, port)
        d = self.relay(port)
        t0 = time.monotonic()
        qid = send_data(d, "s@example.org", ["u@fb.test"], b"Subject: gone\r\n\r\nx\r\n")
        self.assert_sent_by_mx2_in_first_attempt(d, qid, cap, port, ["u@fb.test"], t0)
        self.assertEqual(peer.connections, 1)

    def test_preferred_mx_554_greeting_falls_back(self):
        # Postfix's smtp_skip_5xx_greeting=yes: a 5xx greeting means "not
        # this host", not "bounce the mail".
        port = mx_port([MX1, MX2])
        peer = self.stopped(GreetingPeer(MX1, port, "554 5.3.2 mx1 not accepting mail"))
        cap = self.capture(MX2, port)
        d = self.relay(port)
        t0 = time.monotonic()
        qid = send_data(d, "s@example.org", ["u@fb.test"], b"Subject: 554\r\n\r\nx\r\n")
        self.assert_sent_by_mx2_in_first_attempt(d, qid, cap, port, ["u@fb.test"], t0)
        self.assertNotIn("status=bounced", d.log())
        # RFC 5321 3.1: a server that greets with 554 waits for QUIT; the
        # relay says it (and waits for the 221) before moving on.
        self.assertEqual(peer.commands, ["QUIT"])

    def test_preferred_mx_421_and_next_mx_down_defers_in_one_attempt(self):
        port = mx_port([MX1, MX2])
        peer = self.stopped(GreetingPeer(MX1, port, "421 4.3.2 mx1 too busy"))
        self.stopped(DownHost(MX2, port))
        d = self.relay(port)
        t0 = time.monotonic()
        qid = send_data(d, "s@example.org", ["u@fb.test"], b"Subject: none\r\n\r\nx\r\n")
        line = wait_for(lambda: self.lines_for(d, qid), 10, "a deferral")[0]
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual((line[3], line[4][0], line[5]), (1, "4", "deferred"), line)
        self.assertEqual(peer.connections, 1)
        self.assertIn("connect to mx2.fb.test[%s]:%d failed: Connection refused" % (MX2, port),
                      d.log())
        time.sleep(0.5)
        self.assertEqual([r[0] for r in d.spool_list()], [qid])
        self.assertNotIn("status=bounced", d.log())
        self.assertEqual(len(self.lines_for(d, qid)), 1, "no second attempt before the backoff")

    # (c)
    def test_preferred_mx_4xx_to_rcpt_defers_that_recipient_without_the_next_mx(self):
        # What ringmta does: a 4xx to RCPT from a server that greeted and
        # took EHLO is the recipient's outcome; the recipient is deferred
        # and retried later, preferred MX first; the next MX is not tried in
        # the same attempt (only connection-level failures move on to it).
        # Postfix would instead keep the recipient for the next MX when this
        # is not the last server (smtp_trouble.c smtp_rcpt_fail: "soft
        # error, non-final server"). This test pins ringmta's behaviour.
        port = mx_port([MX1, MX2])
        cap1 = self.capture(MX1, port, tempfail_first=["later@fb.test"])
        cap2 = self.capture(MX2, port)
        d = self.relay(port, minimal_backoff_time="1s", maximal_backoff_time="2s")
        t0 = time.monotonic()
        qid = send_data(d, "s@example.org", ["ok@fb.test", "later@fb.test"],
                        b"Subject: rcpt 4xx\r\n\r\nx\r\n")
        wait_spool_empty(d, 10)
        elapsed = time.monotonic() - t0
        self.assertEqual(cap1.rcpts("ok@fb.test"), [250])
        self.assertEqual(cap1.rcpts("later@fb.test"), [451, 250])
        self.assertEqual(cap2.rcpt_log, [], "mx2 was never asked")
        self.assertEqual(cap2.mail(True), [])
        times = [t for a, _, t in cap1.rcpt_log if a == "later@fb.test"]
        self.assertGreaterEqual(times[1] - times[0], 0.8, "retried before minimal_backoff_time")
        relay1 = "mx1.fb.test[%s]:%d" % (MX1, port)
        lines = [(l[1], l[2], l[3], l[4][0], l[5]) for l in self.lines_for(d, qid)]
        self.assertEqual(sorted(lines), sorted([
            ("ok@fb.test", relay1, 1, "2", "sent"),
            ("later@fb.test", relay1, 1, "4", "deferred"),
            ("later@fb.test", relay1, 2, "2", "sent"),
        ]))
        self.assertLess(elapsed, 8)

    def test_deferral_after_421_then_refused_gives_one_hosts_status_and_text(self):
        # The deferral pairs one host's status with that host's text: the
        # last server's, as Postfix reports it (4.4.1 and mx2's refusal),
        # not mx1's 4.3.2 with mx2's error.
        port = mx_port([MX1, MX2])
        self.stopped(GreetingPeer(MX1, port, "421 4.3.2 mx1 too busy"))
        self.stopped(DownHost(MX2, port))
        d = self.relay(port)
        qid = send_data(d, "s@example.org", ["u@fb.test"], b"Subject: which\r\n\r\nx\r\n")
        line = wait_for(lambda: self.lines_for(d, qid), 10, "a deferral")[0]
        dsn, text = line[4], line[6]
        self.assertEqual((dsn, "Connection refused" in text, "too busy" in text),
                         ("4.4.1", True, False), line)

    # (d)
    def test_all_mx_down_defers_and_keeps_the_message(self):
        port = mx_port([MX1, MX2])
        self.stopped(DownHost(MX1, port))
        self.stopped(DownHost(MX2, port))
        d = self.relay(port)
        t0 = time.monotonic()
        qid = send_data(d, "s@example.org", ["u@fb.test", "v@fb.test"],
                        b"Subject: nobody home\r\n\r\nx\r\n")
        wait_for(lambda: len(self.lines_for(d, qid)) >= 2, 10, "two deferrals")
        elapsed = time.monotonic() - t0
        lines = self.lines_for(d, qid)
        self.assertEqual(sorted((l[1], l[3], l[4], l[5]) for l in lines),
                         [("u@fb.test", 1, "4.4.1", "deferred"),
                          ("v@fb.test", 1, "4.4.1", "deferred")])
        self.assertIn("Connection refused", lines[0][6])
        log = d.log()
        for name, addr in (("mx1", MX1), ("mx2", MX2)):
            self.assertIn("connect to %s.fb.test[%s]:%d failed: Connection refused"
                          % (name, addr, port), log)
        self.assertLess(log.index("connect to mx1.fb.test"), log.index("connect to mx2.fb.test"))
        self.assertLess(elapsed, 5)
        time.sleep(0.5)
        self.assertEqual([(r[0], r[2]) for r in d.spool_list()], [(qid, 2)])
        self.assertNotIn("status=bounced", d.log())
        self.assertEqual(len(self.lines_for(d, qid)), 2, "no second attempt before the backoff")

    def test_all_mx_timing_out_defers_within_two_connect_timeouts(self):
        port = mx_port([MX1, MX2])
        holes = [self.stopped(BlackHole(a, port)) for a in (MX1, MX2)]
        if not all(h.black for h in holes):
            self.skipTest("cannot make a connect time out on loopback here")
        d = self.relay(port, smtp_connect_timeout="1s")
        t0 = time.monotonic()
        qid = send_data(d, "s@example.org", ["u@fb.test"], b"Subject: silence\r\n\r\nx\r\n")
        line = wait_for(lambda: self.lines_for(d, qid), 10, "a deferral")[0]
        elapsed = time.monotonic() - t0
        self.assertEqual((line[3], line[4], line[5]), (1, "4.4.1", "deferred"), line)
        self.assertIn("timed out", line[6])
        self.assertGreaterEqual(elapsed, 1.8)
        self.assertLess(elapsed, 5)
        self.assertEqual([r[0] for r in d.spool_list()], [qid])
        self.assertNotIn("status=bounced", d.log())

    # (e)
    @unittest.skipUnless(ipv6_loopback_works(), "no IPv6 loopback on this machine")
    def test_mx_host_with_dead_ipv4_is_reached_over_ipv6(self):
        port = mx_port([MX1, "::1"])
        self.stopped(DownHost(MX1, port))
        cap = self.capture("::1", port)
        d = self.relay(port)
        t0 = time.monotonic()
        qid = send_data(d, "s@example.org", ["u@v6.test"], b"Subject: v6\r\n\r\nx\r\n")
        wait_spool_empty(d, 10)
        self.assertLess(time.monotonic() - t0, 6)
        self.assertEqual([t["rcpts"] for t in cap.mail()], [["u@v6.test"]])
        lines = self.lines_for(d, qid)
        self.assertEqual([(l[1], l[2], l[3], l[5]) for l in lines],
                         [("u@v6.test", "dual.v6.test[::1]:%d" % port, 1, "sent")])
        self.assertIn("connect to dual.v6.test[%s]:%d failed: Connection refused"
                      % (MX1, port), d.log())


if __name__ == "__main__":
    main()
