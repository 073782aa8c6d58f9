"""The inbound SMTP protocol against the real daemon: hostile and malformed
input (RELIABILITY.md rows 1, 2, 3, 5, 6, 11, 12, 13, 16, 17, 19, 20, 21, 22,
26, 27, 34, 35, 36, 37), BDAT happy paths, and a byte-exact check of what a
DATA body looks like in the spool (ringmta-ctl spool show).

The rule behind every rejection test: bad input gets a clear SMTP error and
nothing is lost. So each one asserts the reply code (and enhanced code), that
`ringmta-ctl spool list` shows nothing new, and that a good message sent
afterwards (on the same connection when the daemon keeps it open, else on a
new one) is accepted and listed.
"""
import os
import re
import select
import socket
import subprocess
import threading
import time

import harness
from harness import DaemonTest, main

BODY = b"Subject: good\r\n\r\nA good message.\r\n"
QUEUED = re.compile(r"^2\.0\.0 Ok: queued as ([0-9a-f]{16})$")


def reply_of(s):
    """(code, last text line) of the next reply."""
    code, texts = s.reply()
    return code, (texts[-1] if texts else "")


def exchange(s, line):
    """Sends one command line (str or bytes, CRLF added), returns (code, text)."""
    if isinstance(line, str):
        line = line.encode("utf-8", "surrogateescape")
    s.send(line + b"\r\n")
    return reply_of(s)


def pending_replies(s, wait=0.3, first=None):
    """Whatever further reply lines arrive within wait seconds (should be
    none). With first, waits up to first seconds for the first octets, then
    wait seconds more for the rest."""
    deadline = time.monotonic() + wait
    if first is not None and not s.buf:
        r, _, _ = select.select([s.sock], [], [], first)
        deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([s.sock], [], [], left)
        if not r:
            break
        try:
            chunk = s.sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        s.buf += chunk
    lines = [l for l in s.buf.split(b"\r\n") if l]
    return lines


class ProtocolTest(DaemonTest):
    # --- helpers ----------------------------------------------------------

    def expect(self, got, code, enh=None, text=None):
        self.assertEqual(got[0], code, "reply %r, wanted %d %s" % (got, code, enh or ""))
        if enh is not None:
            self.assertTrue(got[1].startswith(enh + " "), "reply %r, wanted %s" % (got, enh))
        if text is not None:
            self.assertIn(text, got[1])

    def open(self, d, ehlo="client.test"):
        s = d.connect()
        self.addCleanup(s.close)
        self.assertEqual(s.banner[0], 220)
        if ehlo:
            self.expect(exchange(s, "EHLO " + ehlo), 250)
        return s

    def good(self, s, sender="good@example.org", rcpts=("ok@example.net",), body=BODY,
             params=""):
        """A whole good transaction on a greeted session; returns the queue id.
        params: MAIL parameters, e.g. " SIZE=10"."""
        self.expect(exchange(s, "MAIL FROM:<%s>%s" % (sender, params)), 250, "2.1.0")
        for r in rcpts:
            self.expect(exchange(s, "RCPT TO:<%s>" % r), 250, "2.1.5")
        self.expect(exchange(s, "DATA"), 354)
        s.send(body + b".\r\n")
        code, text = reply_of(s)
        self.assertEqual(code, 250, text)
        m = QUEUED.match(text)
        self.assertIsNotNone(m, text)
        return m.group(1)

    def other_daemon(self, **settings):
        """A second daemon in the same test, with its own spool."""
        tmp = os.path.join(self.tmpdir, "d%d" % len(self.daemons))
        os.mkdir(tmp)
        d = harness.Daemon(tmp, **settings)
        self.daemons.append(d)
        return d.start()

    def assert_queued(self, d, qids, sender="<good@example.org>"):
        """The spool lists exactly these queue ids (and nothing else)."""
        rows = d.spool_list()
        self.assertEqual(sorted(r[0] for r in rows), sorted(qids), rows)
        if sender is not None:
            for r in rows:
                self.assertEqual(r[1], sender, rows)
        return rows

    def show(self, d, qid):
        out = subprocess.run([harness.RINGMTA_CTL, "-o", "spool_dir=" + d.spool, "spool",
                              "show", qid], capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout

    def split_received(self, stored, qid):
        """Splits our Received: header off a stored body; checks its form."""
        m = re.match(rb"Received: from [^\r\n]*\r\n\tby relay\.test \(ringmta\) with [A-Z8]+ id "
                     + qid.encode() + rb"(\r\n\tfor <[^\r\n]*>)?;\r\n\t[^\r\n]* \+0000\r\n",
                     stored)
        self.assertIsNotNone(m, stored[:400])
        return stored[m.end():]

    def closed(self, s, timeout=3.0):
        return s.closed(timeout)

    # --- row 1: SMTP smuggling --------------------------------------------

    SMUGGLE_SEPS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n.\r", b".\n",
                    b"\r\n.\r\r\n"]

    def smuggle_payload(self, sep):
        return (b"Subject: legit\r\n\r\nhello" + sep
                + b"MAIL FROM:<evil@smuggle.test>\r\nRCPT TO:<victim@smuggle.test>\r\n"
                + b"DATA\r\nSubject: smuggled\r\n\r\nsmuggled" + sep + b"\r\n.\r\n")

    def test_row01_smuggling_never_ends_data_early(self):
        d = self.daemon()
        s = self.open(d)
        good = []
        for sep in self.SMUGGLE_SEPS:
            with self.subTest(sep=sep):
                self.expect(exchange(s, "MAIL FROM:<legit@example.org>"), 250)
                self.expect(exchange(s, "RCPT TO:<rcpt@example.net>"), 250)
                self.expect(exchange(s, "DATA"), 354)
                s.send(self.smuggle_payload(sep))
                # One reply for the whole thing: the bare CR/LF rejects it.
                self.expect(reply_of(s), 554, "5.6.0")
                self.assertEqual(pending_replies(s, 0.2), [],
                                 "smuggled commands must not be answered")
                good.append(self.good(s))
        self.assert_queued(d, good)

    def test_row01_smuggling_split_across_reads(self):
        """The same, with the fake terminator cut at every position into
        separate writes (the scanner resumes at any octet)."""
        d = self.daemon()
        s = self.open(d)
        s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        good = []
        for sep in (b"\n.\n", b"\r.\r", b"\r\n.\n"):
            payload = self.smuggle_payload(sep)
            at = payload.index(sep)
            for k in range(1, len(sep)):
                with self.subTest(sep=sep, cut=k):
                    self.expect(exchange(s, "MAIL FROM:<legit@example.org>"), 250)
                    self.expect(exchange(s, "RCPT TO:<rcpt@example.net>"), 250)
                    self.expect(exchange(s, "DATA"), 354)
                    s.send(payload[:at + k])
                    time.sleep(0.02)
                    s.send(payload[at + k:])
                    self.expect(reply_of(s), 554, "5.6.0")
                    self.assertEqual(pending_replies(s, 0.1), [])
                    good.append(self.good(s))
        self.assert_queued(d, good)

    def test_row01_lone_dot_with_bare_lf_is_not_the_end(self):
        """A body that *only* has the fake terminator never completes: the
        daemon keeps waiting for CRLF.CRLF (no reply at all), then rejects."""
        d = self.daemon()
        s = self.open(d)
        self.expect(exchange(s, "MAIL FROM:<legit@example.org>"), 250)
        self.expect(exchange(s, "RCPT TO:<rcpt@example.net>"), 250)
        self.expect(exchange(s, "DATA"), 354)
        s.send(b"Subject: x\r\n\r\nbody\n.\n")
        self.assertEqual(pending_replies(s, 0.3), [], "\\n.\\n must not end DATA")
        s.send(b"\r\n.\r\n")
        self.expect(reply_of(s), 554, "5.6.0")
        self.assert_queued(d, [])
        self.assert_queued(d, [self.good(s)])

    # --- row 2: bare LF ending a command ------------------------------------

    def bare_lf_case(self, d, setup, line, probe):
        """Sends line (with a bare LF) after setup; every reply must be an
        error and then either the session ends, or probe (command, code)
        shows that nothing after the LF ran."""
        s = self.open(d)
        for cmd, code in setup:
            self.expect(exchange(s, cmd), code)
        s.send(line)
        replies = pending_replies(s, 0.3, first=5)
        self.assertTrue(replies, "no reply to a line with a bare LF")
        self.assertTrue(replies[0].startswith(b"500 5.5.2"), replies)
        for r in replies:
            self.assertTrue(r[:1] in (b"4", b"5"), replies)
        s.buf = b""
        if not self.closed(s, 0.3):
            self.expect(exchange(s, probe[0]), probe[1], "5.5.1")
            self.expect(exchange(s, "RSET"), 250)
        return s

    def test_row02_bare_lf_command_is_not_run(self):
        d = self.daemon()
        mail = [("MAIL FROM:<a@example.org>", 250)]
        # A command ending in a bare LF is not run.
        self.bare_lf_case(d, [], b"NOOP\n", ("RCPT TO:<b@example.net>", 503))
        self.bare_lf_case(d, [], b"MAIL FROM:<a@example.org>\n", ("RCPT TO:<b@example.net>", 503))
        # Neither is what follows the LF on the same line (one CRLF line, at
        # most one command: never "NOOP" and then an RCPT).
        self.bare_lf_case(d, mail, b"NOOP\nRCPT TO:<smuggled@example.net>\r\n", ("DATA", 503))
        self.bare_lf_case(d, mail, b"RCPT TO:<x@example.net\nRSET>\r\n", ("DATA", 503))
        self.bare_lf_case(d, mail, b"NOOP\n", ("DATA", 503))
        # ... nor when the rest of the line comes in a later read.
        s = self.open(d)
        self.expect(exchange(s, "MAIL FROM:<a@example.org>"), 250)
        s.send(b"NOOP\n")
        time.sleep(0.05)
        try:
            s.send(b"RCPT TO:<smuggled@example.net>\r\n")
        except OSError:
            pass
        replies = pending_replies(s, 0.3, first=5)
        self.assertTrue(replies and all(r.startswith(b"5") for r in replies), replies)
        self.assert_queued(d, [])
        s = self.open(d)
        self.assert_queued(d, [self.good(s)])

    def test_row02_bare_cr_in_a_command_is_one_error(self):
        d = self.daemon()
        s = self.open(d)
        self.expect(exchange(s, "MAIL FROM:<a@example.org>"), 250)
        s.send(b"NOOP\rRSET\r\n")
        self.expect(reply_of(s), 500, "5.5.2")
        self.assertEqual(pending_replies(s, 0.2), [])
        # RSET did not run: the transaction is still open.
        self.expect(exchange(s, "MAIL FROM:<a@example.org>"), 503, "5.5.1")
        self.expect(exchange(s, "RSET"), 250)
        self.assert_queued(d, [])
        self.assert_queued(d, [self.good(s)])

    # --- row 3 and the byte-exact check -------------------------------------

    def test_row03_dot_stuffed_body_is_stored_exactly(self):
        d = self.daemon()
        s = self.open(d)
        body = (b"Subject: dots\r\nX-8bit: caf\xe9 \xff\xfe\x80\r\n\r\n"
                b"..\r\n"                 # a line that is just "." after unstuffing
                b"..leading dot\r\n"
                b"...\r\n"
                b". \r\n"
                b".\t.\r\n"
                b"middle . dot\r\n"
                b"\x00\x01\x7f\xc3\xa9\xf0\x9f\x98\x80 eight bit\r\n"
                b"..\r\n"
                b"\r\n")                  # an empty line at the end
        qid = self.good(s, body=body)
        stored = self.show(d, qid)
        self.assertEqual(self.split_received(stored, qid), body)
        rows = self.assert_queued(d, [qid])
        self.assertEqual(rows[0][3], len(stored), "listed size is the stored body length")

    def test_row03_empty_body_and_pipelined_command_after_the_dot(self):
        d = self.daemon()
        s = self.open(d)
        # Empty body: DATA then the terminator at once.
        q1 = self.good(s, body=b"")
        self.assertEqual(self.split_received(self.show(d, q1), q1), b"")
        # A command pipelined after the terminator is not part of the body.
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        self.expect(exchange(s, "RCPT TO:<ok@example.net>"), 250)
        self.expect(exchange(s, "DATA"), 354)
        s.send(b"Subject: p\r\n\r\nline\r\n.\r\nRSET\r\n")
        code, text = reply_of(s)
        self.assertEqual(code, 250, text)
        q2 = QUEUED.match(text).group(1)
        self.expect(reply_of(s), 250, "2.0.0")
        self.assertEqual(self.split_received(self.show(d, q2), q2),
                         b"Subject: p\r\n\r\nline\r\n")
        self.assert_queued(d, [q1, q2])

    def test_row03_bytes_exact_across_reads_and_chunks(self):
        """Bodies whose terminator (and pipelined bytes after it) straddle
        the spool's chunk boundaries, and a large body sent in odd pieces."""
        d = self.daemon()
        s = self.open(d)
        s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Length of our Received: header for this session (fixed width).
        probe = self.good(s, body=b"")
        rlen = len(self.show(d, probe))
        qids = [probe]
        expected = {probe: b""}
        # Body chunks hold 2 KiB, then double (queue/spool.h). Sweep the
        # body lengths where the terminator lands on the first three chunk
        # boundaries (a different layout still gets a sweep).
        room, bounds, size = 0, [], 2048
        for _ in range(3):
            room += size
            bounds.append(room - rlen)
            size *= 2
        for base in bounds:
            for n in range(base - 8, base + 9):
                body = self.dotted_body_of(n)
                self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
                self.expect(exchange(s, "RCPT TO:<ok@example.net>"), 250)
                self.expect(exchange(s, "DATA"), 354)
                s.send(body + b".\r\nRSET\r\n")
                code, txt = reply_of(s)
                self.assertEqual(code, 250, txt)
                q = QUEUED.match(txt).group(1)
                self.expect(reply_of(s), 250, "2.0.0")
                qids.append(q)
                expected[q] = body
        # A large body in odd-sized writes, terminator cut between writes.
        big = b"Subject: big\r\n\r\n" + b"".join(b"..%06d %s\r\n" % (i, b"." * (i % 70))
                                                for i in range(4000))
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        self.expect(exchange(s, "RCPT TO:<ok@example.net>"), 250)
        self.expect(exchange(s, "DATA"), 354)
        data = big + b".\r\n"
        pos, step = 0, 1
        while pos < len(data):
            s.send(data[pos:pos + step])
            pos += step
            step = (step * 7 + 3) % 9001 + 1
        code, txt = reply_of(s)
        self.assertEqual(code, 250, txt)
        q = QUEUED.match(txt).group(1)
        qids.append(q)
        expected[q] = big
        self.assert_queued(d, qids)
        for q, body in expected.items():
            self.assertEqual(self.split_received(self.show(d, q), q), body, q)

    @staticmethod
    def dotted_body_of(n):
        """Exactly n (>= 2) octets of CRLF lines, many starting with a
        (stuffed) dot."""
        out = bytearray()
        i = 0
        while len(out) < n:
            out += (b"..", b"...x", b"plain", b"..\xe9\xff", b"")[i % 5] + b"y" * (i % 61)
            out += b"\r\n"
            i += 1
        out = out[:n - 2]
        if out.endswith(b"\r"):
            out[-1:] = b"z"
        if out == b"." or out.endswith(b"\n."):   # would be the terminator
            out[-1:] = b"z"
        return bytes(out) + b"\r\n"

    def test_ctl_spool_show_usage(self):
        d = self.daemon()
        s = self.open(d)
        q = self.good(s)
        ctl = [harness.RINGMTA_CTL, "-o", "spool_dir=" + d.spool, "spool", "show"]
        bad = subprocess.run(ctl + ["xyz"], capture_output=True, timeout=30)
        self.assertEqual(bad.returncode, 2)
        missing = subprocess.run(ctl + ["%016x" % (int(q, 16) ^ 1)], capture_output=True,
                                 timeout=30)
        self.assertEqual(missing.returncode, 1)
        self.assertEqual(missing.stdout, b"")
        self.assertTrue(self.show(d, q).endswith(BODY))

    # --- row 5: talking first, pipelining without PIPELINING ----------------

    def test_row05_client_talks_before_banner(self):
        d = self.daemon(smtpd_greet_pause="600ms")
        s = d.connect(greet=False)
        self.addCleanup(s.close)
        s.send(b"EHLO early.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
               b"DATA\r\nSubject: early\r\n\r\nearly\r\n.\r\n")
        self.expect(reply_of(s), 554, "5.5.1")
        self.assertTrue(self.closed(s))
        self.assert_queued(d, [])
        # A client that waits for the banner is served.
        s2 = self.open(d)
        self.assert_queued(d, [self.good(s2)])

    def test_row05_pipelining_not_offered_after_helo(self):
        d = self.daemon()
        s = self.open(d, ehlo=None)
        self.expect(exchange(s, "HELO client.test"), 250)
        s.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        self.expect(reply_of(s), 554, "5.5.0", "pipelining")
        self.assertTrue(self.closed(s))
        self.assertNotIn(b"354", s.buf)
        self.assert_queued(d, [])
        s2 = self.open(d, ehlo=None)
        self.expect(exchange(s2, "HELO client.test"), 250)
        self.assert_queued(d, [self.good(s2)])

    def test_row05_pipelining_past_a_group_end(self):
        d = self.daemon()
        cases = [
            # DATA must end a group: the body may not ride along.
            (["MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>"],
             b"DATA\r\nSubject: x\r\n\r\nx\r\n.\r\n"),
            (["MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>"],
             b"NOOP\r\nDATA\r\n"),
            ([], b"EHLO again.test\r\nMAIL FROM:<a@example.org>\r\n"),
        ]
        for pre, burst in cases:
            with self.subTest(burst=burst):
                s = self.open(d)
                for line in pre:
                    self.expect(exchange(s, line), 250)
                s.send(burst)
                self.expect(reply_of(s), 554, "5.5.0")
                self.assertTrue(self.closed(s))
                self.assertNotIn(b"354", s.buf)
                self.assert_queued(d, [])
        s = self.open(d)
        self.assert_queued(d, [self.good(s)])

    def test_row05_legal_pipelining_works(self):
        d = self.daemon()
        s = self.open(d)
        s.send(b"MAIL FROM:<good@example.org>\r\nRCPT TO:<x@example.net>\r\n"
               b"RCPT TO:<y@example.net>\r\nDATA\r\n")
        for want in (250, 250, 250, 354):
            self.assertEqual(reply_of(s)[0], want)
        s.send(BODY + b".\r\nQUIT\r\n")
        code, text = reply_of(s)
        self.assertEqual(code, 250, text)
        self.expect(reply_of(s), 221, "2.0.0")
        self.assertTrue(self.closed(s))
        rows = self.assert_queued(d, [QUEUED.match(text).group(1)])
        self.assertEqual(rows[0][2], 2)

    # --- row 6: other protocols --------------------------------------------

    def test_row06_foreign_protocols_are_refused_and_closed(self):
        d = self.daemon()
        probes = [b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: relay.test\r\n\r\n",
                  b"POST /x HTTP/1.0\r\nContent-Length: 0\r\n\r\n", b"CONNECT x:25\r\n",
                  b"CONNECT x:25 HTTP/1.1\r\n\r\n", b"Subject: hi\r\n", b"From: <a@b.test>\r\n"]
        for greet in (None, "client.test"):
            for probe in probes:
                with self.subTest(probe=probe, ehlo=greet):
                    s = self.open(d, ehlo=greet)
                    if greet:
                        self.expect(exchange(s, "MAIL FROM:<a@example.org>"), 250)
                        self.expect(exchange(s, "RCPT TO:<b@example.net>"), 250)
                    s.send(probe)
                    code, text = reply_of(s)
                    self.assertTrue(code is not None and 500 <= code < 600 or code == 221,
                                    (code, text))
                    self.assertTrue(self.closed(s))
        self.assert_queued(d, [])
        s = self.open(d)
        self.assert_queued(d, [self.good(s)])

    # --- row 11: nothing is expanded or executed -----------------------------

    def test_row11_shell_and_expansion_strings_stay_opaque(self):
        d = self.daemon()
        s = self.open(d)
        marker = os.path.join(self.tmpdir, "pwned")
        self.expect(exchange(s, "MAIL FROM:<;sleep 66;>"), 501, "5.1.7")
        self.expect(exchange(s, "MAIL FROM:<$(touch " + marker + ")@x.test>"), 501, "5.1.7")
        self.expect(exchange(s, "MAIL FROM:<a@example.org> ;touch " + marker), 501, "5.5.4")
        self.assert_queued(d, [])
        opaque = ["`id`@x",
                  "${run{/bin/sh}}@x",
                  "`touch${IFS}" + marker + "`@x.test",
                  "%n%s%x%p@x.test"]
        qids = []
        for sender in opaque:
            with self.subTest(sender=sender):
                qids.append(self.good(s, sender=sender, rcpts=(sender,)))
        rows = self.assert_queued(d, qids, sender=None)
        self.assertEqual(sorted(r[1] for r in rows), sorted("<%s>" % a for a in opaque))
        self.assertFalse(os.path.exists(marker))
        # Received: names the recipient as received.
        stored = self.show(d, qids[1])
        self.assertIn(b"for <${run{/bin/sh}}@x>", stored)
        self.assertIn("from=<%n%s%x%p@x.test>", d.log())

    # --- row 12: xtext parameters (DSN offered, AUTH not yet) ----------------

    def test_row12_xtext_params(self):
        d = self.daemon(smtpd_soft_error_limit=50, smtpd_hard_error_limit=100)
        s = self.open(d)
        s.send(b"EHLO client.test\r\n")
        ehlo_caps = s.reply()[1]
        self.assertIn("DSN", ehlo_caps)
        self.assertFalse(any(c.startswith("AUTH") for c in ehlo_caps))
        # Bad xtext, or xtext decoding to CR, LF or NUL: 501 5.5.4, nothing kept.
        for param in ["ENVID=abc+0Ddef", "ENVID=+0A", "ENVID=a+00b", "ENVID=+zz", "ENVID=abc+",
                      "ENVID=+0"]:
            with self.subTest(param=param):
                self.expect(exchange(s, "MAIL FROM:<a@example.org> " + param), 501, "5.5.4")
        # AUTH= is not offered without SMTP AUTH.
        for param in ["AUTH=+0D+0Aevil", "AUTH=a+00", "AUTH=<>"]:
            with self.subTest(param=param):
                self.expect(exchange(s, "MAIL FROM:<a@example.org> " + param), 555, "5.5.4")
        self.expect(exchange(s, "MAIL FROM:<good@example.org> RET=HDRS ENVID=env+2Bid"), 250)
        for param in ["ORCPT=rfc822;a+0D+0Ab@x.test", "ORCPT=rfc822;a+00b@x.test",
                      "ORCPT=rfc822;+zz", "ORCPT=rfc822;x+", "NOTIFY=NEVER,SUCCESS"]:
            with self.subTest(param=param):
                self.expect(exchange(s, "RCPT TO:<b@example.net> " + param), 501, "5.5.4")
        self.expect(exchange(s, "RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE "
                                "ORCPT=rfc822;b+40example.net"), 250)
        self.expect(exchange(s, "DATA"), 354)
        s.send(BODY + b".\r\n")
        code, text = reply_of(s)
        self.assertEqual(code, 250, text)
        self.assert_queued(d, [QUEUED.match(text).group(1)])

    # --- row 13: malformed ESMTP parameters -----------------------------------

    def test_row13_bad_esmtp_parameters(self):
        d = self.daemon(smtpd_soft_error_limit=50, smtpd_hard_error_limit=100)
        s = self.open(d)
        syntax = ["X=", "=", "=x", "SIZE=1 SIZE=2", "BODY=7BIT BODY=8BITMIME", "SIZE",
                  "BODY=BINARYMIME", "SMTPUTF8=yes", "X==y", "X=a=b", "-X=1", "SIZE=1\x7f",
                  "SIZE=1\tBODY=7BIT", "SIZE=1  SIZE=1"]
        for param in syntax:
            with self.subTest(param=param):
                self.expect(exchange(s, "MAIL FROM:<a@example.org> " + param), 501, "5.5.4")
        self.expect(exchange(s, "MAIL FROM:<a@example.org>SIZE=1"), 501)
        for param in ["FOO=bar", "FOO", "X-Y=1", " ".join(["A%d=b" % i for i in range(70)])]:
            with self.subTest(param=param):
                self.expect(exchange(s, "MAIL FROM:<a@example.org> " + param), 555, "5.5.4")
        self.expect(exchange(s, "MAIL FROM:<good@example.org> SIZE=10 BODY=8BITMIME "), 250)
        for param, code in [("FOO=bar", 555), ("X=", 501), ("=", 501), ("SIZE=10", 555)]:
            with self.subTest(rcpt_param=param):
                self.expect(exchange(s, "RCPT TO:<b@example.net> " + param), code, "5.5.4")
        self.expect(exchange(s, "RSET"), 250)
        self.assert_queued(d, [])
        self.assert_queued(d, [self.good(s)])

    # --- row 16: long lines -------------------------------------------------

    def rss_kib(self, d):
        with open("/proc/%d/status" % d.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def test_row16_line_length_limit(self):
        d = self.daemon()
        s = self.open(d)
        # 512 octets with CRLF is the limit: fine. 513 is too long.
        self.expect(exchange(s, "NOOP " + "x" * (512 - 7)), 250)
        self.expect(exchange(s, "NOOP " + "x" * (513 - 7)), 500, "5.5.6", "too long")
        self.expect(exchange(s, "RCPT TO:<" + "a" * 600 + "@x.test>"), 500, "5.5.6")
        s.send(b"MAIL FROM:<a@example.org> " + b"X" * 65536 + b"\r\n")
        self.expect(reply_of(s), 500, "5.5.6")
        self.assertEqual(pending_replies(s, 0.2), [])
        # The rest of an over-long line never becomes a command.
        s.send(b"X" * 1000 + b"\r\nRCPT TO:<b@example.net>\r\n")
        self.expect(reply_of(s), 500, "5.5.6")
        self.expect(reply_of(s), 503, "5.5.1")
        self.assert_queued(d, [])
        self.assert_queued(d, [self.good(s)])

    def test_row16_endless_line_keeps_memory_flat(self):
        d = self.daemon()
        s = self.open(d)
        before = self.rss_kib(d)
        block = b"A" * (1 << 20)
        sent = 0
        t0 = time.monotonic()
        while sent < (1 << 30) and time.monotonic() - t0 < 4:
            s.send(block)
            sent += len(block)
        self.assertGreater(sent, 64 << 20, "sent too little to mean anything")
        after = self.rss_kib(d)
        print("row 16: %d MiB without CRLF, RSS %d -> %d KiB" % (sent >> 20, before, after))
        self.assertLess(after - before, 16 * 1024, "RSS grew %d KiB for %d MiB of line"
                        % (after - before, sent >> 20))
        s.send(b"\r\n")
        self.expect(reply_of(s), 500, "5.5.6")
        self.assertEqual(pending_replies(s, 0.2), [])
        self.assert_queued(d, [self.good(s)])

    # --- row 17: long names and addresses --------------------------------------

    @staticmethod
    def domain_of(n):
        """A valid domain name exactly n octets long (labels of <= 63)."""
        labels, left = [], n
        while left > 0:
            take = min(63, left) if left != 64 else 62
            if left - take == 1:
                take -= 1
            labels.append("d" * take)
            left -= take + 1
        name = ".".join(labels)
        assert len(name) == n, (len(name), n)
        return name

    def test_row17_long_helo_and_addresses(self):
        d = self.daemon(smtpd_soft_error_limit=50, smtpd_hard_error_limit=100)
        s = self.open(d, ehlo=None)
        self.expect(exchange(s, "EHLO " + "h" * 10000), 500, "5.5.6")
        self.expect(exchange(s, "EHLO " + "h" * 256), 501, "5.5.4")
        self.expect(exchange(s, "EHLO " + "h" * 255), 250)
        cases = [
            ("l" * 65 + "@x.test", "5.1.3"),                        # local part 65
            ("l@" + self.domain_of(256), "5.1.3"),                  # domain 256
            ("l" * 64 + "@" + self.domain_of(190), "5.1.3"),        # path 257
            ("l" * 64 + "@" + self.domain_of(300), "5.1.3"),
            ("l@" + "d" * 64 + ".test", "5.1.3"),                   # one label of 64
        ]
        for addr, enh in cases:
            with self.subTest(addr=len(addr)):
                self.expect(exchange(s, "MAIL FROM:<%s>" % addr), 553, enh)
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        for addr, enh in cases:
            with self.subTest(rcpt=len(addr)):
                self.expect(exchange(s, "RCPT TO:<%s>" % addr), 553, enh)
        self.expect(exchange(s, "RSET"), 250)
        self.assert_queued(d, [])
        # The longest legal ones: local part 64, path 256.
        longest = "l" * 64 + "@" + self.domain_of(189)
        q = self.good(s, sender=longest, rcpts=(longest,))
        self.assert_queued(d, [q], sender="<%s>" % longest)
        # A 10 000-octet EHLO name under a bigger line limit: 501, no overflow.
        d2 = self.other_daemon(smtpd_command_line_limit=20000)
        s2 = self.open(d2, ehlo=None)
        self.expect(exchange(s2, "EHLO " + "h" * 10000), 501, "5.5.4")
        self.expect(exchange(s2, "HELO " + "h" * 10000), 501, "5.5.4")
        self.expect(exchange(s2, "EHLO client.test"), 250)
        self.assert_queued(d2, [self.good(s2)])

    # --- row 19: too many recipients -----------------------------------------

    def pipeline_rcpts(self, s, n):
        """Sends MAIL then n RCPTs from a thread while reading replies here."""
        blob = b"".join(b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(n))
        err = []

        def writer():
            try:
                s.sock.sendall(b"MAIL FROM:<good@example.org>\r\n" + blob)
            except OSError as e:
                err.append(e)
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        codes = []
        for _ in range(n + 1):
            code, text = reply_of(s)
            codes.append((code, text))
            if code is None or code == 421:
                break
        t.join(20)
        return codes

    def test_row19_1001_recipients(self):
        d = self.daemon()
        s = self.open(d)
        got = self.pipeline_rcpts(s, 1001)
        self.assertEqual(got[0][0], 250)
        self.assertEqual([c for c, _ in got[1:1001]], [250] * 1000)
        self.expect(got[1001], 452, "4.5.3")
        self.expect(exchange(s, "DATA"), 354)
        s.send(BODY + b".\r\n")
        code, text = reply_of(s)
        self.assertEqual(code, 250, text)
        rows = self.assert_queued(d, [QUEUED.match(text).group(1)])
        self.assertEqual(rows[0][2], 1000)

    def test_row19_100000_recipients_without_error_limit(self):
        d = self.daemon(smtpd_soft_error_limit=0, smtpd_hard_error_limit=0,
                        smtpd_error_sleep_time=0)
        s = self.open(d)
        got = self.pipeline_rcpts(s, 100000)
        self.assertEqual(len(got), 100001)
        self.assertEqual([c for c, _ in got[1:1001]], [250] * 1000)
        self.assertTrue(all(c == 452 and t.startswith("4.5.3") for c, t in got[1001:]))
        self.expect(exchange(s, "DATA"), 354)
        s.send(BODY + b".\r\n")
        code, text = reply_of(s)
        self.assertEqual(code, 250, text)
        rows = self.assert_queued(d, [QUEUED.match(text).group(1)])
        self.assertEqual(rows[0][2], 1000)

    def test_row19_100000_recipients_default_limits(self):
        """With the default error limits too: every recipient past the cap
        gets 452 4.5.3 without counting as an error, and the 1000 accepted
        ones are delivered (RELIABILITY row 19)."""
        d = self.daemon(smtpd_error_sleep_time=0)
        s = self.open(d)
        got = self.pipeline_rcpts(s, 100000)
        self.assertEqual(len(got), 100001)
        self.assertEqual([c for c, _ in got[1:1001]], [250] * 1000)
        self.assertTrue(all(c == 452 and t.startswith("4.5.3") for c, t in got[1001:]))
        self.expect(exchange(s, "DATA"), 354)
        s.send(BODY + b".\r\n")
        code, text = reply_of(s)
        self.assertEqual(code, 250, text)
        rows = self.assert_queued(d, [QUEUED.match(text).group(1)])
        self.assertEqual(rows[0][2], 1000)

    # --- row 20: SIZE= ---------------------------------------------------------

    def test_row20_size_parameter(self):
        d = self.daemon(message_size_limit=10000, smtpd_soft_error_limit=50,
                        smtpd_hard_error_limit=100)
        s = self.open(d)
        for value in ["18446744073709551616", "99999999999999999999999", "-1", "", "+5",
                      "1e3", "0x10", " 5", "5 "]:
            with self.subTest(size=value):
                code = 501 if value != "5 " else 250
                self.expect(exchange(s, "MAIL FROM:<a@example.org> SIZE=" + value), code,
                            "5.5.4" if code == 501 else "2.1.0")
                if code == 250:
                    self.expect(exchange(s, "RSET"), 250)
        for value in ["18446744073709551615", "10001", "4294967296", "4294977296"]:
            with self.subTest(size=value):
                self.expect(exchange(s, "MAIL FROM:<a@example.org> SIZE=" + value), 552,
                            "5.3.4")
        self.expect(exchange(s, "MAIL FROM:<good@example.org> SIZE=10000"), 250)
        self.expect(exchange(s, "RSET"), 250)
        self.expect(exchange(s, "MAIL FROM:<good@example.org> SIZE=0"), 250)
        self.expect(exchange(s, "RSET"), 250)
        self.assert_queued(d, [])
        self.assert_queued(d, [self.good(s)])

    def test_row20_size_is_only_a_hint_for_the_spool(self):
        """The first spool chunk is sized from SIZE= plus our Received:
        header: a SIZE= that understates the body (even below the header's
        own length, with a 255-octet EHLO name making that header long),
        matches it, or overstates it still stores every body exactly."""
        d = self.daemon()
        s = self.open(d, ehlo="h" * 255)
        queued = []
        for size, n in [(1, 3000), (1, 40), (40, 40), (3000, 3000), (2000, 3000),
                        (10, 70000), (70000, 500)]:
            with self.subTest(size=size, body=n):
                body = self.body_of(n)
                qid = self.good(s, body=body, params=" SIZE=%d" % size)
                stored = self.show(d, qid)
                self.assertIn(b"h" * 255, stored[:1000])
                self.assertEqual(self.split_received(stored, qid), body)
                queued.append(qid)
        self.assert_queued(d, queued)

    # --- row 21: body over the limit --------------------------------------------

    def body_of(self, n):
        """A body of exactly n octets (n >= 2) in CRLF lines of <= 80 octets."""
        out = b"Subject: s\r\n\r\n" + (b"b" * 78 + b"\r\n") * (n // 80 + 1)
        out = out[:n - 2]
        if out.endswith(b"\r"):
            out = out[:-1] + b"z"
        return out + b"\r\n"

    def data_message(self, s, body, pieces=None):
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        self.expect(exchange(s, "RCPT TO:<ok@example.net>"), 250)
        self.expect(exchange(s, "DATA"), 354)
        data = body + b".\r\n"
        if pieces is None:
            s.send(data)
        else:
            pos = 0
            for p in pieces:
                s.send(data[pos:pos + p])
                pos += p
                time.sleep(0.03)
            s.send(data[pos:])
        return reply_of(s)

    def test_row21_body_over_the_limit(self):
        d = self.daemon(message_size_limit=10000)
        s = self.open(d)
        s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.expect(self.data_message(s, self.body_of(10001)), 552, "5.3.4")
        self.expect(self.data_message(s, self.body_of(1 << 20)), 552, "5.3.4")
        self.expect(self.data_message(s, self.body_of(20000), pieces=[5000, 5000, 5000]),
                    552, "5.3.4")
        self.assert_queued(d, [])
        # Exactly the limit is fine, however the terminator arrives.
        q1 = QUEUED.match(self.data_message(s, self.body_of(10000))[1])
        self.assertIsNotNone(q1)
        qids = [q1.group(1)]
        for pieces in ([10000], [10000, 1], [10000, 2], [9999], [9998, 1, 1, 1]):
            with self.subTest(pieces=pieces):
                code, text = self.data_message(s, self.body_of(10000), pieces=pieces)
                self.assertEqual(code, 250, text)
                qids.append(QUEUED.match(text).group(1))
        self.assert_queued(d, qids)

    def test_row21_size_limit_zero_means_none(self):
        d = self.daemon(message_size_limit=0)
        s = self.open(d)
        self.expect(exchange(s, "MAIL FROM:<good@example.org> SIZE=20000000"), 250)
        self.expect(exchange(s, "RSET"), 250)
        big = self.body_of(3 << 20)
        q1 = QUEUED.match(self.data_message(s, big)[1])
        self.assertIsNotNone(q1)
        self.bdat_txn(s)
        s.send(b"BDAT %d LAST\r\n" % len(big) + big)
        q2 = self.queued_qid(s)
        rows = self.assert_queued(d, [q1.group(1), q2])
        self.assertTrue(all(r[3] > len(big) for r in rows))

    def test_row21_bdat_over_the_limit(self):
        d = self.daemon(message_size_limit=10000)
        s = self.open(d)
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        self.expect(exchange(s, "RCPT TO:<ok@example.net>"), 250)
        s.send(b"BDAT 6000\r\n" + b"x" * 6000)
        self.expect(reply_of(s), 250, "2.0.0")
        s.send(b"BDAT 6000 LAST\r\n" + b"y" * 6000)
        self.expect(reply_of(s), 552, "5.3.4")
        self.assert_queued(d, [])
        # Over the limit in a non-LAST chunk: that chunk and the rest refused.
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        self.expect(exchange(s, "RCPT TO:<ok@example.net>"), 250)
        s.send(b"BDAT 12000\r\n" + b"x" * 12000)
        self.expect(reply_of(s), 552, "5.3.4")
        s.send(b"BDAT 10 LAST\r\n" + b"y" * 10)
        self.expect(reply_of(s), 552, "5.3.4")
        self.assert_queued(d, [])
        self.assert_queued(d, [self.good(s)])

    # --- row 22: bad BDAT ---------------------------------------------------------

    def test_row22_untrustworthy_bdat_size_closes(self):
        d = self.daemon()
        for arg in ["99999999999999999999", "18446744073709551616", "-1", "", "1x", "5 LASTX",
                    "5  LAST", "+5", "0x10", "5 last more"]:
            with self.subTest(arg=arg):
                s = self.open(d)
                self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
                self.expect(exchange(s, "RCPT TO:<ok@example.net>"), 250)
                s.send(("BDAT %s\r\n" % arg).encode() + b"hello")
                self.expect(reply_of(s), 501, "5.5.4")
                self.assertTrue(self.closed(s))
        self.assert_queued(d, [])
        s = self.open(d)
        self.assert_queued(d, [self.good(s)])

    def test_row22_bdat_out_of_order(self):
        d = self.daemon()
        s = self.open(d)
        # Before MAIL: the chunk is read and dropped, the session goes on.
        s.send(b"BDAT 5\r\nhello")
        self.expect(reply_of(s), 503, "5.5.1")
        s.send(b"BDAT 3 LAST\r\nabc")
        self.expect(reply_of(s), 503, "5.5.1")
        self.assertEqual(pending_replies(s, 0.2), [])
        self.assert_queued(d, [])
        qids = [self.good(s)]
        # Before RCPT.
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        s.send(b"BDAT 5 LAST\r\nhello")
        self.expect(reply_of(s), 503, "5.5.1")
        self.assertEqual(pending_replies(s, 0.2), [])
        self.assert_queued(d, qids)
        qids.append(self.good(s))
        # DATA after BDAT, RCPT after BDAT.
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        self.expect(exchange(s, "RCPT TO:<ok@example.net>"), 250)
        s.send(b"BDAT 5\r\nhello")
        self.expect(reply_of(s), 250, "2.0.0")
        self.expect(exchange(s, "DATA"), 503, "5.5.1")
        self.expect(exchange(s, "RCPT TO:<other@example.net>"), 503, "5.5.1")
        self.expect(exchange(s, "RSET"), 250)
        self.assert_queued(d, qids)
        qids.append(self.good(s))
        self.assert_queued(d, qids)

    def test_row22_bdat_before_mail_then_data(self):
        """A dropped BDAT chunk leaves no trace in the next transaction."""
        d = self.daemon()
        s = self.open(d)
        s.send(b"BDAT 5\r\nhello")
        self.expect(reply_of(s), 503, "5.5.1")
        self.assert_queued(d, [self.good(s)])

    def test_row22_bdat_before_ehlo_never_runs_its_chunk(self):
        d = self.daemon()
        s = self.open(d, ehlo=None)
        chunk = b"EHLO x.test\r\nMAIL FROM:<evil@example.org>\r\n"
        s.send(b"BDAT %d\r\n" % len(chunk))
        time.sleep(0.05)
        s.send(chunk)
        self.expect(reply_of(s), 503, "5.5.1")
        self.assertEqual(pending_replies(s, 0.3), [], "chunk octets ran as commands")
        # Still not greeted.
        self.expect(exchange(s, "MAIL FROM:<a@example.org>"), 503, "5.5.1")
        self.expect(exchange(s, "EHLO client.test"), 250)
        self.assert_queued(d, [self.good(s)])
        # Chunk in the same write: pipelining was not offered, so 554 and
        # close; the chunk never runs either.
        s = self.open(d, ehlo=None)
        s.send(b"BDAT %d\r\n" % len(chunk) + chunk)
        self.expect(reply_of(s), 554, "5.5.0")
        self.assertTrue(self.closed(s))
        self.assertEqual(s.buf, b"")
        self.assertEqual(len(d.spool_list()), 1)

    def test_row22_commands_after_a_rejected_chunk_run_at_once(self):
        """Commands pipelined right behind a refused BDAT chunk are answered
        without waiting for more input from the client."""
        d = self.daemon()
        s = self.open(d)
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        s.send(b"BDAT 3 LAST\r\nabcRSET\r\n")
        self.expect(reply_of(s), 503, "5.5.1")
        self.expect(reply_of(s), 250, "2.0.0")
        self.bdat_txn(s)
        s.send(b"BDAT 3 LAST\r\na\nbRSET\r\n")
        self.expect(reply_of(s), 554, "5.6.0")
        self.expect(reply_of(s), 250, "2.0.0")
        self.bdat_txn(s)
        s.send(b"BDAT 3 LAST\r\na\nbQUIT\r\n")
        self.expect(reply_of(s), 554, "5.6.0")
        self.expect(reply_of(s), 221, "2.0.0")
        self.assertTrue(self.closed(s))
        self.assert_queued(d, [])
        s = self.open(d)
        self.assert_queued(d, [self.good(s)])

    # --- BDAT happy paths ---------------------------------------------------------

    def bdat_txn(self, s):
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        self.expect(exchange(s, "RCPT TO:<ok@example.net>"), 250)

    def queued_qid(self, s):
        code, text = reply_of(s)
        self.assertEqual(code, 250, text)
        m = QUEUED.match(text)
        self.assertIsNotNone(m, text)
        return m.group(1)

    def test_bdat_happy_paths(self):
        d = self.daemon()
        s = self.open(d)
        s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        expected = {}
        # One chunk, data in the same write as the command; contains what
        # DATA would call a terminator, a dot line and a command: all data.
        body = b"Subject: bdat\r\n\r\n.\r\n..\r\nQUIT\r\n\r\n.\r\nend \xff\x00 no CRLF"
        self.bdat_txn(s)
        s.send(b"BDAT %d LAST\r\n" % len(body) + body)
        expected[self.queued_qid(s)] = body
        # Several chunks, then BDAT 0 LAST.
        parts = [b"Subject: parts\r\n", b"\r\nfirst part\r\n", (b"x" * 98 + b"\r\n") * 200,
                 b"last\r\n"]
        self.bdat_txn(s)
        total = 0
        for p in parts:
            s.send(b"BDAT %d\r\n" % len(p) + p)
            total += len(p)
            self.expect(reply_of(s), 250, "2.0.0", "%d octets" % total)
        s.send(b"BDAT 0 LAST\r\n")
        expected[self.queued_qid(s)] = b"".join(parts)
        # BDAT 0 LAST alone: an empty message.
        self.bdat_txn(s)
        s.send(b"BDAT 0 LAST\r\n")
        expected[self.queued_qid(s)] = b""
        # Chunk data arriving after the command, in pieces, and pipelined
        # chunks in one write (RFC 3030 allows it).
        self.bdat_txn(s)
        s.send(b"BDAT 10\r\n")
        time.sleep(0.03)
        s.send(b"01234")
        time.sleep(0.03)
        s.send(b"56789BDAT 3\r\nabcBDAT 4 LAST\r\nwxyz")
        self.expect(reply_of(s), 250, "2.0.0")
        self.expect(reply_of(s), 250, "2.0.0")
        expected[self.queued_qid(s)] = b"0123456789abcwxyz"
        # The whole transaction pipelined after EHLO, chunk boundary mid-line.
        s.send(b"MAIL FROM:<good@example.org>\r\nRCPT TO:<ok@example.net>\r\n"
               b"BDAT 7\r\nSubject" + b"BDAT 10 LAST\r\n: p\r\n\r\nx\r\n")
        for _ in range(3):
            self.assertEqual(reply_of(s)[0], 250)
        expected[self.queued_qid(s)] = b"Subject: p\r\n\r\nx\r\n"
        self.assert_queued(d, list(expected))
        for q, body in expected.items():
            with self.subTest(qid=q):
                self.assertEqual(self.split_received(self.show(d, q), q), body)

    # --- row 26: NUL ---------------------------------------------------------------

    def test_row26_nul_in_commands(self):
        d = self.daemon()
        s = self.open(d)
        s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for line in [b"NO\x00OP", b"MAIL FROM:<a\x00b@example.org>",
                     b"MAIL FROM:<good@example.org>\x00 SIZE=5",
                     b"MAIL FROM:<good@example.org> SIZE=5\x00"]:
            with self.subTest(line=line):
                self.expect(exchange(s, line), 500, "5.5.2", "NUL")
        # Split across reads: the NUL arrives in a later segment.
        s.send(b"MAIL FROM:<good")
        time.sleep(0.05)
        s.send(b"\x00@example.org>\r\n")
        self.expect(reply_of(s), 500, "5.5.2")
        # MAIL never ran.
        self.expect(exchange(s, "RCPT TO:<ok@example.net>"), 503, "5.5.1")
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        for line in [b"RCPT TO:<victim@ext.test\x00@example.net>", b"RCPT TO:<ok@example.net\x00>"]:
            with self.subTest(line=line):
                self.expect(exchange(s, line), 500, "5.5.2")
        self.expect(exchange(s, "DATA"), 503, "5.5.1")
        self.expect(exchange(s, "RSET"), 250)
        self.assert_queued(d, [])
        self.assert_queued(d, [self.good(s)])

    # --- row 27: UTF-8 addresses ------------------------------------------------------

    def test_row27_utf8_addresses(self):
        d = self.daemon(smtpd_soft_error_limit=50, smtpd_hard_error_limit=100)
        s = self.open(d)
        u = "jös\u00e9@exämple.test".encode()
        self.expect(exchange(s, b"MAIL FROM:<" + u + b">"), 553, "5.6.7")
        self.expect(exchange(s, "MAIL FROM:<a@example.org>"), 250)
        self.expect(exchange(s, b"RCPT TO:<" + u + b">"), 553, "5.6.7")
        self.expect(exchange(s, "RSET"), 250)
        bad = [b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xff", b"\x80",
               b"\xf0\x9f\x98", b"\xc3"]
        for seq in bad:
            with self.subTest(seq=seq):
                self.expect(exchange(s, b"MAIL FROM:<a" + seq + b"@example.org> SMTPUTF8"),
                            501, "5.6.7")
                self.expect(exchange(s, b"MAIL FROM:<a@ex" + seq + b".org> SMTPUTF8"),
                            501, "5.6.7")
                self.expect(exchange(s, b"MAIL FROM:<a@example.org" + seq + b"> SMTPUTF8"),
                            501, "5.6.7")
        self.expect(exchange(s, b"MAIL FROM:<" + u + b"> SMTPUTF8"), 250)
        for seq in bad:
            with self.subTest(rcpt=seq):
                self.expect(exchange(s, b"RCPT TO:<b" + seq + b"@example.net>"), 501, "5.6.7")
        self.expect(exchange(s, b"RCPT TO:<\xc3\xbc@example.net>"), 250)
        self.expect(exchange(s, "DATA"), 354)
        s.send(BODY + b".\r\n")
        q = self.queued_qid(s)
        rows = self.assert_queued(d, [q], sender=None)
        self.assertEqual(rows[0][1], "<j\\xc3\\xb6s\\xc3\\xa9@ex\\xc3\\xa4mple.test>")
        self.assertIn(b"with UTF8SMTP", self.show(d, q))

    # --- row 34: mail loops ----------------------------------------------------------

    def received_headers(self, n, name=b"Received"):
        return b"".join(name + b": from hop%d.test by hop%d.test;\r\n\tMon, 1 Jan 2024 00:00:00 "
                        b"+0000\r\n" % (i, i + 1) for i in range(n))

    def test_row34_too_many_received_headers(self):
        d = self.daemon()
        s = self.open(d)
        for hdrs in (self.received_headers(101), self.received_headers(101, b"received"),
                     self.received_headers(50) + self.received_headers(51, b"RECEIVED")):
            self.expect(self.data_message(s, hdrs + b"Subject: loop\r\n\r\nloop\r\n"),
                        554, "5.4.6")
        self.bdat_txn(s)
        body = self.received_headers(101) + b"\r\nloop\r\n"
        s.send(b"BDAT %d LAST\r\n" % len(body) + body)
        self.expect(reply_of(s), 554, "5.4.6")
        self.assert_queued(d, [])
        qids = []
        # 100 is fine; so is any number of them in the body, or X-Received.
        for body in (self.received_headers(100) + b"\r\nok\r\n",
                     b"Subject: x\r\n\r\n" + self.received_headers(150),
                     self.received_headers(150, b"X-Received") + b"\r\nok\r\n"):
            code, text = self.data_message(s, body)
            self.assertEqual(code, 250, text)
            qids.append(QUEUED.match(text).group(1))
        self.assert_queued(d, qids)

    # --- rows 35, 36, 37: relay policy ----------------------------------------------

    def untrusted(self, **kw):
        return self.daemon(relay_networks="192.0.2.0/24", relay_domains="ours.test",
                           smtpd_soft_error_limit=50, smtpd_hard_error_limit=100, **kw)

    def test_row35_relay_denied_for_untrusted_clients(self):
        d = self.untrusted()
        s = self.open(d)
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        self.expect(exchange(s, "RCPT TO:<victim@ext.test>"), 554, "5.7.1",
                    "<victim@ext.test>: Relay access denied")
        self.expect(exchange(s, "RCPT TO:<%n%s@ext.test>"), 554, "5.7.1", "<%n%s@ext.test>")
        self.expect(exchange(s, "RCPT TO:<user@ours.test>"), 250)
        self.expect(exchange(s, "DATA"), 354)
        s.send(BODY + b".\r\n")
        q = self.queued_qid(s)
        rows = self.assert_queued(d, [q])
        self.assertEqual(rows[0][2], 1, "only the local recipient was taken")
        # Only denied recipients: nothing to send.
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        self.expect(exchange(s, "RCPT TO:<victim@ext.test>"), 554, "5.7.1")
        self.expect(exchange(s, "DATA"), 554, "5.5.1")
        self.assert_queued(d, [q])
        # Control: the same recipient from a trusted network is relayed.
        d2 = self.other_daemon(relay_domains="ours.test")
        s2 = self.open(d2)
        self.assert_queued(d2, [self.good(s2, rcpts=("victim@ext.test",))])

    def test_row36_relay_tricks_never_relay(self):
        d = self.untrusted()
        s = self.open(d)
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        tricks = ["victim%ext.test@ours.test", '"victim@ext.test"@ours.test',
                  "victim@ext.test@ours.test", "@ours.test:victim@ext.test",
                  "@ours.test,@ours.test:victim@ext.test", "ext.test!victim@ours.test",
                  "victim@[203.0.113.5]", "victim@[IPv6:2001:db8::5]", "victim@EXT.TEST.",
                  '"victim%ext.test"@ours.test', "victim@ours.test.ext.test",
                  "victim@ext.test.ours", "victim@ours.test@ext.test", "victim@ext.test:ours.test",
                  "victim@ours\x00.test"]
        for addr in tricks:
            with self.subTest(addr=addr):
                code, text = exchange(s, "RCPT TO:<%s>" % addr)
                self.assertTrue(code is not None and code >= 500, (addr, code, text))
        self.expect(exchange(s, "DATA"), 554, "5.5.1")
        self.assert_queued(d, [])
        # Local recipients in any case, with the root dot: accepted.
        self.expect(exchange(s, "RSET"), 250)
        q = self.good(s, rcpts=("victim@ours.test", "VICTIM@OURS.TEST."))
        rows = self.assert_queued(d, [q])
        self.assertEqual(rows[0][2], 2)

    def test_row37_postmaster_always_accepted(self):
        d = self.untrusted()
        s = self.open(d)
        q = self.good(s, rcpts=("postmaster", "POSTMASTER", "PostMaster", "postmaster@ours.test"))
        rows = self.assert_queued(d, [q])
        self.assertEqual(rows[0][2], 4)
        self.expect(exchange(s, "MAIL FROM:<good@example.org>"), 250)
        self.expect(exchange(s, "RCPT TO:<postmaster@ext.test>"), 554, "5.7.1")
        self.expect(exchange(s, "RCPT TO:<postmasters>"), 501, "5.1.3")
        self.expect(exchange(s, "RSET"), 250)
        self.assert_queued(d, [q])


if __name__ == "__main__":
    main()
