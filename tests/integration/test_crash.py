"""Crashes, torn spool records and vanishing clients (RELIABILITY rows 38-41, 50).

The promise under test: a 250 after the end of data means the message is on
disk, and nothing the client did not finish is ever listed. A load client
(16 threads, pipelined MAIL/RCPT/DATA after EHLO) sends messages whose sender
address carries a unique token, so every line of `ringmta-ctl spool list` maps
back to exactly one message the client knows; the daemon is SIGKILLed at a
random moment in several rounds and the spool is checked after each.
"""
import os
import random
import re
import signal
import socket
import struct
import subprocess
import threading
import time

from harness import RINGMTA_CTL, DaemonTest, main

QUEUED = re.compile(r"^2\.0\.0 Ok: queued as ([0-9a-f]{16})$")
HOSTNAME = "relay.test"
HELO = "load.client.test"


# --- message bodies and the stored size ---------------------------------------

def wire_body(token, size, rng):
    """A body in wire form (CRLF lines, dot-stuffed), about size octets, with
    the token in Subject and Message-ID and some lines that start with a dot."""
    lines = [
        "Subject: load %s" % token,
        "Message-ID: <%s@load.test>" % token,
        "From: <load-%s@example.org>" % token,
        "",
        "BODY-%s" % token,
    ]
    total = sum(len(x) + 2 for x in lines)
    i = 0
    while total < size:
        n = rng.randint(10, 200)
        line = ("%s-%06d-" % (token, i) + "x" * n)[:max(n, 1)]
        if i % 7 == 3:
            line = "." + line            # stuffed: ".." on the wire
        if line.startswith("."):
            line = "." + line
        lines.append(line)
        total += len(line) + 2
        i += 1
    lines.append("END-%s" % token)
    return ("\r\n".join(lines) + "\r\n").encode()


def received_len(qid, rcpts, helo=HELO, client="127.0.0.1"):
    """Length of the Received: header ringmta puts before the body
    (core/smtp_server.c smtp_server_format_received; the date is always 31
    octets: "Mon, 01 Jan 2024 00:00:00 +0000")."""
    rcpt = "\r\n\tfor <%s>" % rcpts[0] if len(rcpts) == 1 else ""
    head = "Received: from %s (unknown [%s])\r\n\tby %s (ringmta) with ESMTP id %s%s;\r\n\t" % (
        helo, client, HOSTNAME, qid, rcpt)
    return len(head.encode()) + 31 + 2


def spool_show(d, qid):
    """`ringmta-ctl spool show QID` output, or None when ctl has no such
    command (then only sizes can be checked)."""
    p = subprocess.run([RINGMTA_CTL, "-o", "spool_dir=" + d.spool, "spool", "show", qid],
                       capture_output=True, timeout=60)
    if p.returncode == 2 and b"show" not in p.stderr:
        return None
    if p.returncode != 0:
        raise AssertionError("spool show %s failed (%d): %r" % (qid, p.returncode, p.stderr))
    return p.stdout


def fd_count(pid):
    """Sockets the process holds (segment files come and go on their own)."""
    n = 0
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"):
                    n += 1
            except FileNotFoundError:
                pass
    except FileNotFoundError:
        return -1
    return n


# --- a minimal pipelining SMTP client ------------------------------------------

class Conn:
    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def reply(self):
        """(code, [texts]); raises EOFError when the server is gone."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError("connection closed")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text[4:])
            if len(text) == 3 or text[3] == " ":
                return int(text[:3]), lines

    def close(self, rst=False):
        try:
            if rst:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError:
            pass


class Msg:
    __slots__ = ("token", "sender", "rcpts", "body", "state", "qid")

    def __init__(self, token, rcpts, body):
        self.token = token
        self.sender = "load-%s@example.org" % token
        self.rcpts = rcpts
        self.body = body
        self.state = "new"       # new -> partial (354 seen) -> sent (dot sent) -> acked
        self.qid = None


class Load:
    """n threads, each one session sending messages back to back until the
    daemon dies or stop is set."""

    def __init__(self, port, nthreads=16, seed=None, prefix="r"):
        self.port = port
        self.nthreads = nthreads
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.msgs = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.errors = []
        self.threads = []
        self.shutdown_ok = False

    def new_msg(self, rng, tid, i):
        token = "%s%02d%05d%06x" % (self.prefix, tid, i, rng.getrandbits(24))
        nr = rng.choice([1, 1, 2, 3])
        rcpts = ["u%d-%s@dest%d.example" % (k, token, k % 2) for k in range(nr)]
        size = rng.randint(100, 3000) if rng.random() < 0.9 else rng.randint(20000, 250000)
        m = Msg(token, rcpts, wire_body(token, size, rng))
        with self.lock:
            self.msgs.append(m)
        return m

    def run_one(self, tid):
        rng = random.Random(self.rng.getrandbits(64))
        try:
            c = Conn(self.port)
        except OSError:
            return
        try:
            code, _ = c.reply()
            if code != 220:
                return
            c.sock.sendall(("EHLO %s\r\n" % HELO).encode())
            if c.reply()[0] != 250:
                return
            i = 0
            while not self.stop.is_set():
                m = self.new_msg(rng, tid, i)
                i += 1
                if rng.random() < 0.25:
                    ok = self.send_bdat(c, m, rng)
                else:
                    ok = self.send_data(c, m, rng)
                if not ok:
                    return
        except (OSError, EOFError):
            pass          # the daemon was killed
        finally:
            c.close()

    def error(self, code, text):
        """Records a protocol error, except the 421 of a daemon shutting down
        when that is what the test does."""
        if not (self.shutdown_ok and code == 421):
            self.errors.append(text)

    def envelope(self, m):
        cmds = "MAIL FROM:<%s>\r\n" % m.sender
        return cmds + "".join("RCPT TO:<%s>\r\n" % r for r in m.rcpts)

    def queued(self, c, m, what):
        code, texts = c.reply()
        mm = QUEUED.match(texts[0]) if code == 250 else None
        if mm is None:
            self.error(code, "%s: %s answered %r %r" % (m.token, what, code, texts))
            return False
        m.qid = mm.group(1)
        m.state = "acked"
        return True

    def send_data(self, c, m, rng):
        """MAIL, RCPT..., DATA as one pipelined group; the body in two writes;
        sometimes a NOOP right behind the final dot (not part of the message)."""
        c.sock.sendall((self.envelope(m) + "DATA\r\n").encode())
        codes = [c.reply()[0] for _ in range(len(m.rcpts) + 2)]
        if codes != [250] * (len(m.rcpts) + 1) + [354]:
            self.error(codes[-1], "%s: replies %r" % (m.token, codes))
            return False
        m.state = "partial"
        half = rng.randint(1, len(m.body) - 1)
        c.sock.sendall(m.body[:half])
        c.sock.sendall(m.body[half:])
        trailer = b".\r\nNOOP\r\n" if rng.random() < 0.3 else b".\r\n"
        m.state = "sent"                 # the dot may reach the daemon from now on
        c.sock.sendall(trailer)
        if not self.queued(c, m, "end of data"):
            return False
        if len(trailer) > 3 and c.reply()[0] != 250:
            self.errors.append("%s: NOOP after the dot" % m.token)
            return False
        return True

    def send_bdat(self, c, m, rng):
        """MAIL, RCPT... and the BDAT chunks pipelined (RFC 3030); the stored
        body is the octets as sent."""
        body = m.body
        cuts = sorted(rng.sample(range(1, len(body)), min(rng.randint(0, 3), len(body) - 1)))
        chunks = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)])]
        c.sock.sendall(self.envelope(m).encode())
        m.state = "partial"
        for k, ch in enumerate(chunks):
            last = k == len(chunks) - 1
            c.sock.sendall(b"BDAT %d%s\r\n" % (len(ch), b" LAST" if last else b""))
            if last:
                c.sock.sendall(ch[:-1])
                m.state = "sent"
                c.sock.sendall(ch[-1:])
            else:
                c.sock.sendall(ch)
        codes = [c.reply()[0] for _ in range(len(m.rcpts) + 1 + len(chunks) - 1)]
        if codes != [250] * len(codes):
            self.error(codes[-1], "%s: BDAT replies %r" % (m.token, codes))
            return False
        return self.queued(c, m, "BDAT LAST")

    def start(self):
        for tid in range(self.nthreads):
            t = threading.Thread(target=self.run_one, args=(tid,), daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self, timeout=30):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "load threads hung"


# --- the tests ------------------------------------------------------------------

class CrashTest(DaemonTest):
    def check_spool(self, d, msgs, note=""):
        """Every acknowledged message listed with its qid, recipient count and
        size; every listed message complete and one the client finished;
        nothing listed twice. Returns the rows."""
        rows = d.spool_list()
        by_sender = {"<%s>" % m.sender: m for m in msgs}
        listed = {}
        for qid, sender, nrcpt, size, state in rows:
            self.assertNotIn(qid, listed, "%squeue id %s listed twice" % (note, qid))
            m = by_sender.get(sender)
            if m is None:
                continue          # a message of another test step
            listed[qid] = m
            self.assertIn(m.state, ("sent", "acked"),
                          "%s%s listed but the client never sent its final dot (state %s)"
                          % (note, m.token, m.state))
            if m.qid is not None:
                self.assertEqual(qid, m.qid, "%s%s listed under another queue id" % (note, m.token))
            self.assertEqual(nrcpt, len(m.rcpts), "%s%s recipient count" % (note, m.token))
            self.assertEqual(size, received_len(qid, m.rcpts) + len(m.body),
                             "%s%s size: stored %d, body %d (partial or extra octets)"
                             % (note, m.token, size, len(m.body)))
            self.assertEqual(state, "queued")
        # Bodies, where ctl can show them (each call scans the whole spool):
        # every listed message the client got no 250 for, and a sample.
        unacked = [q for q, m in listed.items() if m.qid is None]
        sample = unacked + random.sample(sorted(listed), min(6, len(listed)))
        for qid in sample:
            out = spool_show(d, qid)
            if out is None:
                break
            self.assertTrue(out.endswith(listed[qid].body),
                            "%s%s stored body differs" % (note, listed[qid].token))
            self.assertEqual(len(out), received_len(qid, listed[qid].rcpts) + len(listed[qid].body))
        acked = [m for m in msgs if m.state == "acked"]
        missing = [m.qid for m in acked if m.qid not in listed]
        self.assertEqual(missing, [], "%s%d of %d acknowledged messages are not in the spool"
                         % (note, len(missing), len(acked)))
        self.assertGreaterEqual(len(listed), len(acked))
        self.assertEqual(len({m.token for m in listed.values()}), len(listed),
                         "%sone message listed twice" % note)
        return rows

    def test_kill9_under_load_keeps_every_acknowledged_message(self):
        """Rows 39 and 40: SIGKILL at random moments under load, 4 rounds."""
        self.check_kill9_under_load(4)

    def test_kill9_under_load_with_buffered_receive(self):
        """The same with bodies written through the file (pwrite), 2 rounds."""
        self.check_kill9_under_load(2, spool_receive="buffered")

    def check_kill9_under_load(self, rounds, **settings):
        rng = random.Random()
        seed = rng.getrandbits(32)
        rng.seed(seed)
        # Small segments: many rollovers, messages spanning segments.
        d = self.daemon(spool_segment_size="1M", **settings)
        all_msgs = []
        for rnd in range(rounds):
            load = Load(d.port, nthreads=16, seed=rng.getrandbits(64), prefix="r%d" % rnd)
            load.start()
            time.sleep(rng.uniform(0.5, 3.0))
            d.kill9()
            load.finish()
            self.assertEqual(load.errors, [], "seed %d round %d" % (seed, rnd))
            all_msgs += load.msgs
            acked = sum(1 for m in load.msgs if m.state == "acked")
            self.assertGreater(acked, 0, "round %d: no message acknowledged" % rnd)
            rows = self.check_spool(d, all_msgs, "seed %d round %d: " % (seed, rnd))
            print("round %d: %d sessions, %d messages acknowledged, %d in flight, %d listed"
                  % (rnd, load.nthreads, acked,
                     sum(1 for m in load.msgs if m.state in ("partial", "sent")), len(rows)))
            d.start()
            m = re.findall(r"recovered (\d+) queued message", d.log())
            self.assertEqual(int(m[-1]), len(rows), "recovery count after round %d" % rnd)
        # The daemon that came back takes mail as before.
        s = d.connect()
        code, texts = s.mail("after@example.org", ["x@dest.example"], "Subject: after\r\n\r\nok\r\n")
        s.close()
        self.assertEqual(code, 250, texts)
        self.assertEqual(d.stop(), 0)
        rows = self.check_spool(d, all_msgs, "seed %d final: " % seed)
        self.assertIn("<after@example.org>", [r[1] for r in rows])

    def test_sigterm_under_load_keeps_every_acknowledged_message(self):
        """A graceful stop under load: commits in flight finish, sessions get
        421, the daemon exits 0 promptly, and every 250 is in the spool."""
        d = self.daemon(spool_segment_size="1M")
        load = Load(d.port, nthreads=16, prefix="t")
        load.shutdown_ok = True
        load.start()
        time.sleep(1.5)
        t0 = time.monotonic()
        self.assertEqual(d.stop(timeout=10), 0)
        self.assertLess(time.monotonic() - t0, 5)
        load.finish()
        self.assertEqual(load.errors, [])
        self.assertGreater(sum(1 for m in load.msgs if m.state == "acked"), 0)
        self.check_spool(d, load.msgs, "after SIGTERM: ")

    def test_kill9_right_after_final_dot(self):
        """Row 39: SIGKILL after the final dot, before (or just after) the 250:
        absent, or complete; never partial."""
        d = self.daemon()
        msgs = []
        rng = random.Random()
        for i, delay in enumerate([0, 0.0005, 0.001, 0.002, 0.004, 0.008]):
            token = "dot%d%06x" % (i, rng.getrandbits(24))
            m = Msg(token, ["a@dest.example"], wire_body(token, rng.choice([500, 60000]), rng))
            msgs.append(m)
            c = Conn(d.port)
            self.assertEqual(c.reply()[0], 220)
            # EHLO ends a group (RFC 2920): its reply first, then the rest.
            c.sock.sendall(("EHLO %s\r\n" % HELO).encode())
            self.assertEqual(c.reply()[0], 250)
            c.sock.sendall(("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n"
                            % (m.sender, m.rcpts[0])).encode())
            self.assertEqual([c.reply()[0] for _ in range(3)], [250, 250, 354])
            c.sock.sendall(m.body)
            m.state = "sent"
            c.sock.sendall(b".\r\n")
            if delay:
                time.sleep(delay)
            d.kill9()
            try:
                code, texts = c.reply()
                if code == 250:
                    m.qid = QUEUED.match(texts[0]).group(1)
                    m.state = "acked"
            except (OSError, EOFError):
                pass
            c.close()
            self.check_spool(d, msgs, "delay %s: " % delay)
            d.start()
        self.assertEqual(d.stop(), 0)
        self.check_spool(d, msgs, "final: ")

    def test_kill9_in_the_middle_of_data_leaves_no_trace(self):
        """Row 38: SIGKILL while the client is in DATA without its final dot."""
        d = self.daemon()
        s = d.connect()
        code, texts = s.mail("before@example.org", ["x@dest.example"], "Subject: before\r\n\r\nx\r\n")
        self.assertEqual(code, 250, texts)
        s.close()
        rng = random.Random()
        conns = []
        for size in (300, 20000, 300000):
            token = "mid%06x" % rng.getrandbits(24)
            body = wire_body(token, size, rng)
            c = Conn(d.port)
            self.assertEqual(c.reply()[0], 220)
            c.sock.sendall(("EHLO %s\r\n" % HELO).encode())
            self.assertEqual(c.reply()[0], 250)
            c.sock.sendall(("MAIL FROM:<middle-%s@example.org>\r\nRCPT TO:<y@dest.example>\r\n"
                            "DATA\r\n" % token).encode())
            self.assertEqual([c.reply()[0] for _ in range(3)], [250, 250, 354])
            c.sock.sendall(body[:len(body) // 2])
            conns.append(c)
        time.sleep(0.3)   # the halves are in the spool mapping by now
        d.kill9()
        for c in conns:
            try:
                code, texts = c.reply()
                self.fail("got a reply %r %r to half a message" % (code, texts))
            except (OSError, EOFError):
                pass
            c.close()
        rows = d.spool_list()
        self.assertEqual([r[1] for r in rows], ["<before@example.org>"])
        d.start()
        self.assertIn("recovered 1 queued message", d.log())
        self.assertEqual(d.stop(), 0)
        self.assertEqual([r[1] for r in d.spool_list()], ["<before@example.org>"])

    def test_reset_mid_data_is_dropped_cleanly(self):
        """Row 50: the peer disappears (RST) mid-DATA: the daemon stays up, no
        message, no leaked descriptor, the next client is served."""
        d = self.daemon()
        # Warm up: one message through each worker, so both have their spare
        # segment and buffers.
        for _ in range(4):
            s = d.connect()
            self.assertEqual(s.mail("warm@example.org", ["x@dest.example"], "x\r\n")[0], 250)
            s.close()
        time.sleep(0.3)
        base_fds = fd_count(d.proc.pid)
        rng = random.Random()
        for i, size in enumerate([50, 5000, 9000, 70000, 400000] * 2):
            token = "rst%d%06x" % (i, rng.getrandbits(24))
            body = wire_body(token, size, rng)
            c = Conn(d.port)
            self.assertEqual(c.reply()[0], 220)
            c.sock.sendall(("EHLO %s\r\n" % HELO).encode())
            self.assertEqual(c.reply()[0], 250)
            c.sock.sendall(("MAIL FROM:<rst-%s@example.org>\r\nRCPT TO:<y@dest.example>\r\n"
                            "DATA\r\n" % token).encode())
            self.assertEqual([c.reply()[0] for _ in range(3)], [250, 250, 354])
            c.sock.sendall(body[:len(body) // 2])
            if i % 2:
                time.sleep(0.05)
            c.close(rst=True)
        time.sleep(0.3)
        self.assertTrue(d.alive(), "daemon died after RST mid-DATA")
        s = d.connect()
        code, texts = s.mail("next@example.org", ["x@dest.example"], "Subject: next\r\n\r\nok\r\n")
        s.close()
        self.assertEqual(code, 250, texts)
        deadline = time.monotonic() + 5
        while fd_count(d.proc.pid) > base_fds and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertLessEqual(fd_count(d.proc.pid), base_fds, "sockets leaked")
        self.assertEqual(d.stop(), 0)
        senders = sorted(r[1] for r in d.spool_list())
        self.assertEqual(senders, ["<next@example.org>"] + ["<warm@example.org>"] * 4)

    # --- damaged spool records (row 41) ---

    def send_marked(self, d, n, rng, size=3000):
        """n messages on one session; returns [(qid, marker)]."""
        if not hasattr(self, "bodies"):
            self.bodies = {}
        out = []
        s = d.connect()
        self.assertEqual(s.cmd("EHLO " + HELO), 250)
        for i in range(n):
            marker = "MARK%d-%08x" % (i, rng.getrandbits(32))
            body = ("Subject: %s\r\n\r\n" % marker + ("%s line\r\n" % marker) * (size // 20))
            self.assertEqual(s.cmd("MAIL FROM:<m%d@example.org>" % i), 250)
            self.assertEqual(s.cmd("RCPT TO:<r%d@dest.example>" % i), 250)
            self.assertEqual(s.cmd("DATA"), 354)
            s.send(body.encode() + b".\r\n")
            code, texts = s.reply()
            self.assertEqual(code, 250, texts)
            out.append((QUEUED.match(texts[0]).group(1), marker))
            self.bodies[out[-1][0]] = body.encode()
        s.cmd("QUIT")
        s.close()
        return out

    def check_bodies(self, d, qids):
        for qid in qids:
            out = spool_show(d, qid)
            if out is None:
                return
            self.assertTrue(out.endswith(self.bodies[qid]), "%s: stored body differs" % qid)

    def segment_with(self, d, needle):
        segdir = os.path.join(d.spool, "seg")
        for name in sorted(os.listdir(segdir)):
            path = os.path.join(segdir, name)
            with open(path, "rb") as f:
                data = f.read()
            i = data.find(needle)
            if i >= 0:
                return path, i
        self.fail("%r not found in any segment" % needle)

    def test_corrupted_body_byte_is_quarantined(self):
        """Row 41: a flipped byte in a body chunk: the checksum catches it, the
        record goes to corrupt/, the other messages stay."""
        d = self.daemon(workers=1)
        rng = random.Random()
        sent = self.send_marked(d, 5, rng)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(sorted(r[0] for r in d.spool_list()), sorted(q for q, _ in sent))
        victim_qid, marker = sent[2]
        path, off = self.segment_with(d, ("%s line" % marker).encode())
        with open(path, "r+b") as f:
            f.seek(off + 100)
            b = f.read(1)
            f.seek(off + 100)
            f.write(bytes([b[0] ^ 0x20]))
        d.start()
        self.assertEqual(d.stop(), 0)
        listed = sorted(r[0] for r in d.spool_list())
        self.assertEqual(listed, sorted(q for q, _ in sent if q != victim_qid))
        self.check_bodies(d, listed)
        corrupt = os.path.join(d.spool, "corrupt")
        self.assertTrue(os.path.isdir(corrupt) and os.listdir(corrupt), "nothing in corrupt/")
        # And the spool keeps working.
        d.start()
        s = d.connect()
        self.assertEqual(s.mail("after@example.org", ["x@dest.example"], "x\r\n")[0], 250)
        s.close()
        self.assertEqual(d.stop(), 0)
        self.assertEqual(len(d.spool_list()), 5)

    def test_truncated_segment_keeps_only_complete_messages(self):
        """Row 41: a segment whose written tail is cut off (file truncated in the
        middle of the last message): the complete ones stay, the cut one goes."""
        d = self.daemon(workers=1)
        rng = random.Random()
        sent = self.send_marked(d, 4, rng, size=6000)
        self.assertEqual(d.stop(), 0)
        last_qid, marker = sent[-1]
        path, off = self.segment_with(d, ("%s line" % marker).encode())
        size_before = os.path.getsize(path)
        os.truncate(path, off + 1000)
        self.assertLess(os.path.getsize(path), size_before)
        d.start()
        self.assertEqual(d.stop(), 0)
        self.assertEqual(sorted(r[0] for r in d.spool_list()),
                         sorted(q for q, _ in sent[:-1]))
        # A zeroed (torn) tail in a fresh segment: same outcome.
        d.start()
        sent2 = self.send_marked(d, 3, rng, size=6000)
        self.assertEqual(d.stop(), 0)
        path, off = self.segment_with(d, ("%s line" % sent2[-1][1]).encode())
        with open(path, "r+b") as f:
            f.seek(off + 500)
            f.write(b"\0" * 20000)
        d.start()
        self.assertEqual(d.stop(), 0)
        self.assertEqual(sorted(r[0] for r in d.spool_list()),
                         sorted(q for q, _ in sent[:-1] + sent2[:-1]))
        self.check_bodies(d, [q for q, _ in sent[:-1] + sent2[:-1]])


if __name__ == "__main__":
    main()
