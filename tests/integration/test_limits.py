"""Resource limits and abusive clients (RELIABILITY rows 16, 29-33, greet pause).

Every limit is set low so the tests stay short: long lines in bounded memory,
deadlines and the minimum data rate, the error tarpit and the junk limit,
per-client and global connection limits (with distinct loopback source
addresses to show other clients are unaffected), thousands of idle sessions,
and a full disk (a small tmpfs as the spool; needs root, skipped otherwise).
"""
import os
import re
import resource
import select
import socket
import subprocess
import time

from harness import RINGMTA_CTL, DaemonTest, Session, main

QUEUED = re.compile(r"^2\.0\.0 Ok: queued as ([0-9a-f]{16})$")


def vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def session_from(port, src="127.0.0.1", greet=True, timeout=10.0):
    """A harness Session whose socket is bound to a loopback source address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((src, 0))
    sock.connect(("127.0.0.1", port))
    s = Session.__new__(Session)
    s.sock = sock
    s.buf = b""
    s.banner = s.reply() if greet else None
    return s


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ValueError, OSError):
        return soft
    return new


def readable(sock, timeout):
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)


def received_len(qid, rcpts, helo, client="127.0.0.1", hostname="relay.test"):
    """Length of the Received: header before the body (the date is 31 octets)."""
    rcpt = "\r\n\tfor <%s>" % rcpts[0] if len(rcpts) == 1 else ""
    head = "Received: from %s (unknown [%s])\r\n\tby %s (ringmta) with ESMTP id %s%s;\r\n\t" % (
        helo, client, hostname, qid, rcpt)
    return len(head.encode()) + 31 + 2


class LimitsTest(DaemonTest):
    def setUp(self):
        super().setUp()
        self.mounts = []
        self.sessions = []

    def tearDown(self):
        for s in self.sessions:
            s.close()
        for d in self.daemons:
            d.kill9()
        for m in self.mounts:
            subprocess.run(["umount", "-l", m], capture_output=True)
        super().tearDown()

    def close_sessions(self):
        for s in self.sessions:
            s.close()
        self.sessions = []

    def keep(self, s):
        self.sessions.append(s)
        return s

    def send_message(self, s, sender, rcpt, body):
        """MAIL/RCPT/DATA on an open session (after EHLO): (code, texts)."""
        self.assertEqual(s.cmd("MAIL FROM:<%s>" % sender), 250)
        self.assertEqual(s.cmd("RCPT TO:<%s>" % rcpt), 250)
        self.assertEqual(s.cmd("DATA"), 354)
        s.send(body + b".\r\n")
        return s.reply()

    # --- row 16: long command lines -------------------------------------------

    def test_long_lines_get_500_in_flat_memory(self):
        d = self.daemon()
        s = self.keep(d.connect())
        self.assertEqual(s.cmd("EHLO client.test"), 250)
        rss0 = vm_rss_kb(d.proc.pid)
        for n in (513, 64 * 1024):
            s.send(b"NOOP " + b"x" * (n - 7) + b"\r\n")
            code, texts = s.reply()
            self.assertEqual(code, 500, texts)
            self.assertTrue(texts[0].startswith("5.5.6"), texts)
        # 512 octets including CRLF is still a command.
        self.assertEqual(s.cmd("NOOP " + "x" * (512 - 7)), 250)
        # 5 MB without a line end, in pieces; nothing comes back until the LF.
        piece = b"A" * 65536
        peak = rss0
        for i in range(80):
            s.send(piece)
            if i % 16 == 15:
                peak = max(peak, vm_rss_kb(d.proc.pid))
        self.assertFalse(readable(s.sock, 0.2), "reply before the line ended")
        s.send(b"\r\n")
        code, texts = s.reply()
        self.assertEqual(code, 500, texts)
        self.assertTrue(texts[0].startswith("5.5.6"), texts)
        peak = max(peak, vm_rss_kb(d.proc.pid))
        self.assertLess(peak - rss0, 20 * 1024, "RSS grew %d kB for a 5 MB line" % (peak - rss0))
        # The session is still usable, and a message still goes through.
        self.assertEqual(s.cmd("NOOP"), 250)
        code, texts = self.send_message(s, "a@example.org", "b@dest.example", b"Subject: x\r\n\r\nx\r\n")
        self.assertEqual(code, 250, texts)

    # --- row 29: deadlines and the minimum data rate -----------------------------

    def expect_timeout(self, s, t0, lo=0.8, hi=2.2):
        code, texts = s.reply()
        elapsed = time.monotonic() - t0
        self.assertEqual(code, 421, texts)
        self.assertTrue(texts[0].startswith("4.4.2"), texts)
        self.assertTrue(lo <= elapsed <= hi, "421 after %.2f s" % elapsed)
        self.assertTrue(s.closed(3), "not closed after 421")

    def test_silent_client_times_out(self):
        d = self.daemon(smtpd_timeout="1s")
        s = self.keep(d.connect())
        self.expect_timeout(s, time.monotonic())

    def test_slowloris_partial_line_does_not_extend_deadline(self):
        d = self.daemon(smtpd_timeout="1s")
        s = self.keep(d.connect())
        self.assertEqual(s.cmd("EHLO client.test"), 250)
        t0 = time.monotonic()
        for b in b"NOOP and more and more and more and more":
            try:
                s.send(bytes([b]))
            except OSError:
                break
            if readable(s.sock, 0.3):
                break
        self.expect_timeout(s, t0)

    def test_slow_data_is_cut_by_min_data_rate(self):
        d = self.daemon(smtpd_timeout="1s", smtpd_min_data_rate=500)
        s = self.keep(d.connect())
        self.assertEqual(s.cmd("EHLO client.test"), 250)
        self.assertEqual(s.cmd("MAIL FROM:<slow@example.org>"), 250)
        self.assertEqual(s.cmd("RCPT TO:<b@dest.example>"), 250)
        self.assertEqual(s.cmd("DATA"), 354)
        t0 = time.monotonic()
        body = b"Subject: slow\r\n\r\n" + b"z" * 100
        for b in body:    # 10 octets per second
            try:
                s.send(bytes([b]))
            except OSError:
                break
            if readable(s.sock, 0.1):
                break
        self.expect_timeout(s, t0, hi=2.5)
        self.close_sessions()
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.spool_list(), [])

    def test_steady_data_within_rate_is_accepted(self):
        """The control: 2000 octets/s over 2.5 s with smtpd_timeout=1s."""
        d = self.daemon(smtpd_timeout="1s", smtpd_min_data_rate=500)
        s = self.keep(d.connect())
        self.assertEqual(s.cmd("EHLO client.test"), 250)
        self.assertEqual(s.cmd("MAIL FROM:<steady@example.org>"), 250)
        self.assertEqual(s.cmd("RCPT TO:<b@dest.example>"), 250)
        self.assertEqual(s.cmd("DATA"), 354)
        line = b"y" * 198 + b"\r\n"
        for _ in range(25):
            s.send(line)
            self.assertFalse(readable(s.sock, 0.1), "reply in the middle of the body")
        s.send(b".\r\n")
        code, texts = s.reply()
        self.assertEqual(code, 250, texts)

    def test_timed_out_body_never_damages_other_messages(self):
        """Row 29 + the promise: a client cut off mid-DATA by the deadline keeps
        sending its body; messages acknowledged meanwhile stay intact."""
        d = self.daemon(workers=1, smtpd_timeout="1s", smtpd_min_data_rate=500)
        slow = self.keep(d.connect())
        self.assertEqual(slow.cmd("EHLO slow.test"), 250)
        self.assertEqual(slow.cmd("MAIL FROM:<slow@example.org>"), 250)
        self.assertEqual(slow.cmd("RCPT TO:<b@dest.example>"), 250)
        self.assertEqual(slow.cmd("DATA"), 354)
        slow.send(b"Subject: slow\r\n")
        code, texts = slow.reply()         # the deadline passes
        self.assertEqual(code, 421, texts)
        acked = []
        for i in range(3):
            s = self.keep(d.connect())
            self.assertEqual(s.cmd("EHLO fast.test"), 250)
            body = b"Subject: fast %d\r\n\r\n" % i + b"fast body line\r\n" * (40 + 100 * i)
            code, texts = self.send_message(s, "fast%d@example.org" % i, "c@dest.example", body)
            self.assertEqual(code, 250, texts)
            acked.append((QUEUED.match(texts[0]).group(1), body))
            s.cmd("QUIT")
            if i == 0:
                # The rest of the slow client's body arrives now (the daemon
                # lingers after its 421, reading what comes).
                try:
                    slow.send(b"J" * 6000)
                except OSError:
                    pass
                time.sleep(0.3)
        self.assertTrue(d.alive())
        self.close_sessions()
        self.assertEqual(d.stop(), 0)
        rows = {r[0]: r for r in d.spool_list()}
        for qid, body in acked:
            self.assertIn(qid, rows, "acknowledged message %s lost (damaged by a dead "
                          "session's receive?)" % qid)
            self.assertEqual(rows[qid][3], received_len(qid, ["c@dest.example"], "fast.test")
                             + len(body))
        self.assertEqual(len(rows), len(acked))
        self.assertFalse(os.path.isdir(os.path.join(d.spool, "corrupt"))
                         and os.listdir(os.path.join(d.spool, "corrupt")))

    # --- row 30: error tarpit, hard error limit, junk limit -------------------------

    def test_error_tarpit_then_hard_limit(self):
        d = self.daemon(smtpd_soft_error_limit=2, smtpd_hard_error_limit=5,
                        smtpd_error_sleep_time="200ms")
        s = self.keep(d.connect())
        self.assertEqual(s.cmd("EHLO client.test"), 250)
        delays = []
        for i in range(4):
            t0 = time.monotonic()
            code = s.cmd("BOGUS%d" % i)
            delays.append(time.monotonic() - t0)
            self.assertEqual(code, 500)
        self.assertLess(delays[0], 0.15, delays)
        self.assertLess(delays[1], 0.15, delays)
        self.assertGreaterEqual(delays[2], 0.18, delays)
        self.assertGreaterEqual(delays[3], 0.18, delays)
        s.send("BOGUS5\r\n")
        codes = []
        while True:
            code, texts = s.reply()
            if code is None:
                break
            codes.append((code, texts[0]))
            if code == 421:
                break
        self.assertTrue(codes and codes[-1][0] == 421 and codes[-1][1].startswith("4.7.0"),
                        codes)
        self.assertIn(len(codes), (1, 2), codes)
        self.assertTrue(s.closed(3))

    def test_junk_command_limit(self):
        d = self.daemon(smtpd_junk_command_limit=10)
        s = self.keep(d.connect())
        self.assertEqual(s.cmd("EHLO client.test"), 250)
        for _ in range(10):
            self.assertEqual(s.cmd("NOOP"), 250)
        s.send("NOOP\r\n")
        code, texts = s.reply()
        if code == 250:          # the 11th NOOP answered, then the 421
            code, texts = s.reply()
        self.assertEqual(code, 421, texts)
        self.assertTrue(texts[0].startswith("4.7.0"), texts)
        self.assertTrue(s.closed(3))
        # A client doing real work is not junk: a message resets the count.
        s = self.keep(d.connect())
        self.assertEqual(s.cmd("EHLO client.test"), 250)
        for round_ in range(2):
            for _ in range(8):
                self.assertEqual(s.cmd("NOOP"), 250)
            code, texts = self.send_message(s, "a@example.org", "b@dest.example", b"x\r\n")
            self.assertEqual(code, 250, texts)
        self.assertEqual(s.cmd("NOOP"), 250)

    # --- row 31: per-client limits -----------------------------------------------

    def test_per_client_connection_count_limit(self):
        # No exceptions: by default loopback (like Postfix's $mynetworks) is
        # exempt from the per-client limits.
        d = self.daemon(smtpd_client_connection_count_limit=5,
                        smtpd_client_event_limit_exceptions="")
        held = [self.keep(session_from(d.port)) for _ in range(5)]
        for s in held:
            self.assertEqual(s.banner[0], 220)
        sixth = self.keep(session_from(d.port))
        self.assertEqual(sixth.banner[0], 421, sixth.banner)
        self.assertTrue(sixth.banner[1][0].startswith("4.7.0"), sixth.banner)
        self.assertTrue(sixth.closed(3))
        # The five keep working, and another client is not affected.
        for s in held:
            self.assertEqual(s.cmd("EHLO client.test"), 250)
        code, texts = self.send_message(held[0], "a@example.org", "b@dest.example", b"x\r\n")
        self.assertEqual(code, 250, texts)
        other = self.keep(session_from(d.port, "127.0.0.2"))
        self.assertEqual(other.banner[0], 220, other.banner)
        self.assertEqual(other.cmd("EHLO other.test"), 250)
        code, texts = self.send_message(other, "o@example.org", "b@dest.example", b"x\r\n")
        self.assertEqual(code, 250, texts)
        # A closed connection frees its slot.
        self.assertEqual(held[4].cmd("QUIT"), 221)
        held[4].closed(3)
        held[4].close()
        deadline = time.monotonic() + 3
        while True:
            s = self.keep(session_from(d.port))
            if s.banner[0] == 220 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(s.banner[0], 220, "slot not released: %r" % (s.banner,))

    def test_per_client_connection_rate_limit(self):
        # 127.0.0.4: the harness's start-up probe came from 127.0.0.1.
        d = self.daemon(smtpd_client_connection_rate_limit=3,
                        smtpd_client_event_limit_exceptions="")
        for _ in range(3):
            s = self.keep(session_from(d.port, "127.0.0.4"))
            self.assertEqual(s.banner[0], 220, s.banner)
            self.assertEqual(s.cmd("QUIT"), 221)
            s.close()
        s = self.keep(session_from(d.port, "127.0.0.4"))
        self.assertEqual(s.banner[0], 421, s.banner)
        self.assertTrue(s.banner[1][0].startswith("4.7.0"), s.banner)
        self.assertTrue(s.closed(3))
        other = self.keep(session_from(d.port, "127.0.0.3"))
        self.assertEqual(other.banner[0], 220, other.banner)
        self.assertEqual(other.cmd("EHLO other.test"), 250)

    def test_exempt_clients_skip_per_client_limits(self):
        d = self.daemon(smtpd_client_connection_count_limit=2,
                        smtpd_client_event_limit_exceptions="127.0.0.5/32")
        exempt = [self.keep(session_from(d.port, "127.0.0.5")) for _ in range(6)]
        for s in exempt:
            self.assertEqual(s.banner[0], 220, s.banner)
        limited = [self.keep(session_from(d.port, "127.0.0.6")) for _ in range(3)]
        self.assertEqual([s.banner[0] for s in limited], [220, 220, 421])

    # --- row 32: the global budget and idle sessions --------------------------------

    def test_global_connection_limit(self):
        d = self.daemon(smtpd_connection_limit=50)
        ok, refused = [], []
        for i in range(60):
            s = self.keep(session_from(d.port, "127.0.0.%d" % (2 + i % 6)))
            (ok if s.banner[0] == 220 else refused).append(s)
        self.assertEqual(len(ok), 50)
        self.assertEqual(len(refused), 10)
        for s in refused:
            self.assertEqual(s.banner[0], 421, s.banner)
            self.assertTrue(s.banner[1][0].startswith("4.3.2"), s.banner)
        # The admitted ones work; closing some makes room again.
        self.assertEqual(ok[0].cmd("EHLO client.test"), 250)
        self.assertEqual(ok[49].cmd("NOOP"), 250)
        for s in ok[:3]:
            s.cmd("QUIT")
            s.close()
        deadline = time.monotonic() + 3
        while True:
            s = self.keep(session_from(d.port, "127.0.0.9"))
            if s.banner[0] == 220 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(s.banner[0], 220, s.banner)

    def test_two_thousand_idle_sessions_in_bounded_memory(self):
        n = 2000
        if raise_nofile(n + 500) < n + 200:
            self.skipTest("RLIMIT_NOFILE too low for %d sessions" % n)
        d = self.daemon()
        warm = self.keep(d.connect())
        self.assertEqual(warm.cmd("EHLO client.test"), 250)
        time.sleep(0.2)
        rss0 = vm_rss_kb(d.proc.pid)
        conns = []
        for i in range(n):
            # 40 per address: under the default per-client limit of 50.
            src = "127.0.%d.%d" % (1 + i // 10000, 2 + (i // 40) % 250)
            try:
                s = session_from(d.port, src)
            except OSError as e:
                self.fail("connection %d: %s (daemon log may show EMFILE)" % (i, e))
            self.keep(s)
            self.assertEqual(s.banner[0], 220, "connection %d: %r" % (i, s.banner))
            conns.append(s)
        rss1 = vm_rss_kb(d.proc.pid)
        grew = rss1 - rss0
        print("%d idle sessions: VmRSS %d -> %d kB (%.1f kB per session)"
              % (n, rss0, rss1, grew / n))
        self.assertLess(grew, 40 * 1024, "VmRSS grew %d kB for %d idle sessions" % (grew, n))
        for s in conns[::97]:
            self.assertEqual(s.cmd("NOOP"), 250)
        self.assertTrue(d.alive())
        for s in conns:
            s.close()
        code, texts = self.send_message(warm, "a@example.org", "b@dest.example", b"x\r\n")
        self.assertEqual(code, 250, texts)

    def test_out_of_descriptors_pauses_accepts(self):
        """The daemon at RLIMIT_NOFILE: accepting fails with EMFILE; it must not
        spin (the pending connection stays in the backlog) nor flood the log,
        and it greets the waiting clients once descriptors are free."""
        # The daemon lifts its soft limit to the hard one at start, and an
        # armed io_uring accept keeps the limit of its submission: set both
        # before exec (sh's exec keeps the pid).
        d = self.daemon(start=False)
        args = d.args
        d.args = lambda: ["/bin/sh", "-c", 'ulimit -Sn 128 && ulimit -Hn 128 && exec "$@"',
                          "sh"] + args()
        d.start()
        with open("/proc/%d/limits" % d.proc.pid) as f:
            self.assertIn(" 128 ", [l for l in f if l.startswith("Max open files")][0])
        conns = [self.keep(session_from(d.port, "127.0.0.%d" % (2 + i // 40), greet=False))
                 for i in range(200)]
        time.sleep(0.5)

        def cpu_ticks():
            with open("/proc/%d/stat" % d.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        c0 = cpu_ticks()
        time.sleep(1.5)
        busy = (cpu_ticks() - c0) / os.sysconf("SC_CLK_TCK")
        self.assertLess(busy, 0.3, "daemon busy %.2f s of 1.5 s while out of descriptors" % busy)
        warnings = d.log().count("accept: Too many open files")
        self.assertGreater(warnings, 0)
        self.assertLess(warnings, 20, "accept failures flood the log")
        for s in conns[:150]:
            s.close()
        for s in conns[150:]:
            code, texts = s.reply()
            self.assertEqual(code, 220, texts)
        s = self.keep(d.connect())
        self.assertEqual(s.cmd("EHLO client.test"), 250)
        code, texts = self.send_message(s, "a@example.org", "b@dest.example", b"x\r\n")
        self.assertEqual(code, 250, texts)

    def test_sigterm_with_clients_that_never_close(self):
        """Idle clients (one fresh, one already cut off by a 421 and never
        closing its end) do not keep the daemon from stopping."""
        d = self.daemon(smtpd_timeout="1s")
        cut = self.keep(d.connect())
        self.assertEqual(cut.reply()[0], 421)          # deadline; the daemon lingers
        idle = self.keep(d.connect())
        self.assertEqual(idle.cmd("EHLO idle.test"), 250)
        t0 = time.monotonic()
        self.assertEqual(d.stop(timeout=8), 0)
        self.assertLess(time.monotonic() - t0, 4.0)
        code, texts = idle.reply()
        self.assertEqual(code, 421, texts)
        self.assertTrue(texts[0].startswith("4.3.2"), texts)

    # --- row 33: disk full ------------------------------------------------------------

    def test_disk_full_answers_452_and_recovers(self):
        if os.geteuid() != 0:
            self.skipTest("mounting a tmpfs needs root")
        mnt = os.path.join(self.tmpdir, "spool")
        os.makedirs(mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6M", "tmpfs", mnt],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest("cannot mount tmpfs: %s" % r.stderr.strip())
        self.mounts.append(mnt)
        ballast = os.path.join(mnt, "ballast")
        with open(ballast, "wb") as f:
            f.write(b"\xa5" * (3 << 20))
            f.flush()
            os.fsync(f.fileno())
        d = self.daemon(spool_segment_size="1M")
        self.assertEqual(d.spool, mnt)
        body = b"Subject: fill\r\n\r\n" + (b"f" * 78 + b"\r\n") * 1200   # ~96 KB
        acked = []
        codes = []

        def one():
            s = d.connect()
            try:
                self.assertEqual(s.cmd("EHLO fill.test"), 250)
                self.assertEqual(s.cmd("MAIL FROM:<fill@example.org>"), 250)
                self.assertEqual(s.cmd("RCPT TO:<b@dest.example>"), 250)
                s.send("DATA\r\n")
                code, texts = s.reply()
                if code == 354:
                    s.send(body + b".\r\n")
                    code, texts = s.reply()
                if code == 250:
                    acked.append(QUEUED.match(texts[0]).group(1))
                else:
                    self.assertEqual(code, 452, texts)
                    self.assertTrue(texts[0].startswith("4.3.1"), texts)
                codes.append(code)
                s.cmd("QUIT")
            finally:
                s.close()
            return code

        t_start = time.monotonic()
        run_of_452 = 0
        for _ in range(200):
            run_of_452 = run_of_452 + 1 if one() == 452 else 0
            if run_of_452 >= 8:
                break
        self.assertGreaterEqual(run_of_452, 8, "never full? codes %r" % codes)
        self.assertGreater(len(acked), 3)
        self.assertTrue(d.alive(), "daemon died on a full disk")
        time.sleep(0.5)
        # Segment preparation is retried, but not in a hot loop.
        full_for = time.monotonic() - t_start
        retries = d.log().count("preparing spool segment")
        self.assertLess(retries, 2 * 12 * (full_for + 1), "segment retries flood the log")
        # Free space: new mail is accepted again, without a restart.
        os.remove(ballast)
        deadline = time.monotonic() + 10
        while one() != 250:
            self.assertLess(time.monotonic(), deadline, "still refusing after space freed")
            time.sleep(0.1)
        time.sleep(0.3)     # every worker has retried its segment by now (a tick)
        for _ in range(8):
            if one() != 250:
                self.fail("452 after space was freed: %r\n%s" % (codes[-10:], "\n".join(
                    l for l in d.log().splitlines() if "from=<" not in l)[-3000:]))
        self.assertTrue(d.alive())
        self.assertEqual(d.stop(), 0)
        rows = {r[0]: r for r in d.spool_list()}
        for qid in acked:
            self.assertIn(qid, rows, "acknowledged on a full disk but not stored")
            self.assertEqual(rows[qid][3], received_len(qid, ["b@dest.example"], "fill.test")
                             + len(body))
        self.assertEqual(len(rows), len(acked))

    # --- greet pause --------------------------------------------------------------------

    def test_greet_pause(self):
        d = self.daemon(smtpd_greet_pause="300ms")
        rude = self.keep(d.connect(greet=False))
        rude.send("EHLO rude.test\r\n")
        code, texts = rude.reply()
        self.assertEqual(code, 554, texts)
        self.assertTrue(rude.closed(3))
        t0 = time.monotonic()
        polite = self.keep(d.connect())
        waited = time.monotonic() - t0
        self.assertEqual(polite.banner[0], 220, polite.banner)
        self.assertGreaterEqual(waited, 0.28)
        self.assertEqual(polite.cmd("EHLO polite.test"), 250)
        code, texts = self.send_message(polite, "p@example.org", "b@dest.example", b"x\r\n")
        self.assertEqual(code, 250, texts)
        self.close_sessions()
        self.assertEqual(d.stop(), 0)
        self.assertEqual([r[1] for r in d.spool_list()], ["<p@example.org>"])


if __name__ == "__main__":
    main()
