"""Inbound TLS against the real daemon: STARTTLS (RFC 3207) on smtp listeners,
implicit TLS on submissions listeners (RFC 8314), with real clients (swaks,
Python's smtplib and ssl, openssl s_client) and scripted hostile sessions
(RELIABILITY.md rows 7, 9, 10). Certificates come from a private CA made
with the openssl CLI (certs.py)."""
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time

import certs
import harness
from harness import DaemonTest, main

BODY = b"Subject: tls\r\n\r\nA message over TLS.\r\n"
QUEUED = re.compile(r"queued as ([0-9a-f]{16})")


def client_context(**kw):
    ctx = ssl.create_default_context(cafile=certs.ca_file())
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


class TlsSession(harness.Session):
    """harness.Session whose socket can be upgraded to TLS in place."""

    def starttls(self, ctx=None, hostname="localhost"):
        code, texts = self.send_cmd("STARTTLS")
        if code != 220:
            return code, texts
        assert self.buf == b"", "plaintext after the 220: %r" % self.buf
        self.sock = (ctx or client_context()).wrap_socket(self.sock, server_hostname=hostname)
        return code, texts

    def send_cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()


def implicit_session(port, ctx=None, timeout=10.0):
    """A session on a submissions port: TLS first, then the banner."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s = TlsSession.__new__(TlsSession)
    s.sock = (ctx or client_context()).wrap_socket(raw, server_hostname="localhost")
    s.buf = b""
    s.banner = s.reply()
    return s


def ehlo_keywords(texts):
    return [t.split(" ")[0].upper() for t in texts[1:]]


class TlsTest(DaemonTest):
    def tls_daemon(self, **settings):
        cert, key = certs.server_cert("server")
        self.sub_port = harness.free_port()
        home = os.path.join(self.tmpdir, "tls%d" % len(self.daemons))
        os.makedirs(home)
        opts = dict(smtpd_tls_cert_file=cert, smtpd_tls_key_file=key)
        opts.update(settings)
        d = harness.Daemon(home, **opts)
        d.settings["listen"] = "127.0.0.1:%d, 127.0.0.1:%d/submissions" % (d.port,
                                                                          self.sub_port)
        self.daemons.append(d)
        return d.start()

    def tls_connect(self, d):
        return TlsSession(d.port)

    def queued(self, d):
        return [r[0] for r in d.spool_list()]

    def spool_show(self, d, qid):
        return subprocess.run([harness.RINGMTA_CTL, "-o", "spool_dir=" + d.spool, "spool",
                               "show", qid], check=True, capture_output=True,
                              timeout=60).stdout

    # --- STARTTLS -------------------------------------------------------

    def test_starttls_offered_only_with_a_certificate(self):
        plain = self.daemon()
        s = TlsSession(plain.port)
        code, texts = s.send_cmd("EHLO c.test")
        self.assertEqual(code, 250)
        self.assertNotIn("STARTTLS", ehlo_keywords(texts))
        code, texts = s.send_cmd("STARTTLS")
        self.assertEqual(code, 502)
        self.assertEqual(s.cmd("NOOP"), 250)   # session unchanged
        d = self.tls_daemon()
        s = self.tls_connect(d)
        code, texts = s.send_cmd("EHLO c.test")
        self.assertIn("STARTTLS", ehlo_keywords(texts))

    def test_swaks_starttls_queues_a_message_marked_esmtps(self):
        d = self.tls_daemon()
        out = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % d.port, "--tls",
                              "--tls-verify", "--tls-ca-path", certs.ca_file(),
                              "--from", "a@example.org", "--to", "b@example.net"],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("TLS started", out.stdout)
        qid = QUEUED.search(out.stdout).group(1)
        self.assertEqual(self.queued(d), [qid])
        head = self.spool_show(d, qid).split(b"\r\n\r\n")[0]
        self.assertIn(b"with ESMTPS id " + qid.encode(), head)
        self.assertRegex(head, rb"\(using TLSv1\.[23] with cipher [A-Z0-9_-]+ \(\d+/\d+ bits\)\)")

    def test_smtplib_starttls_then_mail_without_ehlo_is_refused(self):
        """Row 9: after the handshake nothing from before counts: MAIL needs a
        new EHLO, and the new EHLO no longer offers STARTTLS."""
        d = self.tls_daemon()
        s = self.tls_connect(d)
        self.assertEqual(s.send_cmd("EHLO c.test")[0], 250)
        self.assertEqual(s.starttls()[0], 220)
        code, texts = s.send_cmd("MAIL FROM:<a@example.org>")
        self.assertEqual(code, 503)
        self.assertTrue(texts[-1].startswith("5.5.1"), texts)
        code, texts = s.send_cmd("EHLO c.test")
        self.assertEqual(code, 250)
        self.assertNotIn("STARTTLS", ehlo_keywords(texts))
        # Row 10: STARTTLS inside TLS.
        code, texts = s.send_cmd("STARTTLS")
        self.assertEqual(code, 503)
        self.assertTrue(texts[-1].startswith("5.5.1"), texts)
        code, texts = s.mail("a@example.org", ["b@example.net"], BODY)
        self.assertEqual(code, 250, texts)
        self.assertEqual(len(self.queued(d)), 1)

        # The same with smtplib, several messages on one connection.
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as c:
            c.starttls(context=client_context())
            for i in range(5):
                c.sendmail("a@example.org", ["b%d@example.net" % i], BODY)
        self.assertEqual(len(self.queued(d)), 6)

    def test_starttls_inside_a_transaction_is_refused_and_changes_nothing(self):
        """Row 10: 503 5.5.1 mid-transaction; the transaction goes on."""
        d = self.tls_daemon()
        s = self.tls_connect(d)
        self.assertEqual(s.send_cmd("EHLO c.test")[0], 250)
        self.assertEqual(s.cmd("MAIL FROM:<a@example.org>"), 250)
        code, texts = s.send_cmd("STARTTLS")
        self.assertEqual(code, 503)
        self.assertTrue(texts[-1].startswith("5.5.1"), texts)
        self.assertEqual(s.cmd("RCPT TO:<b@example.net>"), 250)
        self.assertEqual(s.cmd("DATA"), 354)
        s.send(BODY + b".\r\n")
        self.assertEqual(s.reply()[0], 250)
        self.assertEqual(len(self.queued(d)), 1)

    def test_plaintext_pipelined_behind_starttls_never_runs(self):
        """Row 7 (CVE-2011-0411): STARTTLS and a command in one segment."""
        d = self.tls_daemon()
        s = self.tls_connect(d)
        self.assertEqual(s.send_cmd("EHLO c.test")[0], 250)
        s.send(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
        code, texts = s.reply()
        self.assertNotEqual(code, 220)   # no handshake for this client
        self.assertEqual(code // 100, 5, texts)
        self.assertTrue(s.closed())
        self.assertEqual(self.queued(d), [])

    def test_plaintext_after_the_220_is_not_a_command(self):
        """Row 7, the other way round: plaintext sent after the 220 is fed to
        TLS (a failed handshake), never to the session."""
        d = self.tls_daemon()
        s = self.tls_connect(d)
        self.assertEqual(s.send_cmd("EHLO c.test")[0], 250)
        self.assertEqual(s.send_cmd("STARTTLS")[0], 220)
        s.send(b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<v@example.net>\r\n")
        self.assertTrue(s.closed())
        self.assertNotIn(b"250", s.buf)
        self.assertIn("TLS handshake with 127.0.0.1 failed", d.log())
        self.assertEqual(self.queued(d), [])

    def test_encrypt_level_requires_starttls_before_mail(self):
        d = self.tls_daemon(smtpd_tls_security_level="encrypt")
        s = self.tls_connect(d)
        self.assertEqual(s.send_cmd("EHLO c.test")[0], 250)
        code, texts = s.send_cmd("MAIL FROM:<a@example.org>")
        self.assertEqual(code, 530)
        self.assertTrue(texts[-1].startswith("5.7.0"), texts)
        self.assertEqual(s.starttls()[0], 220)
        code, texts = s.mail("a@example.org", ["b@example.net"], BODY)
        self.assertEqual(code, 250, texts)

    def test_openssl_s_client_starttls(self):
        d = self.tls_daemon()
        p = subprocess.Popen(["openssl", "s_client", "-starttls", "smtp", "-connect",
                              "127.0.0.1:%d" % d.port, "-CAfile", certs.ca_file(),
                              "-verify_return_error", "-servername", "localhost", "-crlf",
                              "-quiet"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        # One command at a time: EHLO must end a pipelining group.
        p.stdin.write(b"EHLO c.test\n")
        p.stdin.flush()
        time.sleep(1.0)
        p.stdin.write(b"QUIT\n")
        p.stdin.close()
        p.wait(timeout=60)
        out, err = p.stdout.read(), p.stderr.read()
        out = out.decode(errors="replace")
        self.assertIn("250-relay.test", out)
        self.assertIn("221 2.0.0", out)
        self.assertIn("verify return:1", err.decode(errors="replace"))

    def test_minimum_protocol_version(self):
        d = self.tls_daemon(smtpd_tls_protocols=">=TLSv1.3")
        s = self.tls_connect(d)
        self.assertEqual(s.send_cmd("EHLO c.test")[0], 250)
        ctx = client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
        with self.assertRaises(ssl.SSLError):
            s.starttls(ctx)
        # TLS 1.3 still works.
        s = self.tls_connect(d)
        self.assertEqual(s.send_cmd("EHLO c.test")[0], 250)
        s.starttls()
        self.assertEqual(s.sock.version(), "TLSv1.3")

    # --- implicit TLS (submissions) ----------------------------------------

    def test_implicit_tls_banner_inside_tls_and_byte_exact_body(self):
        self.check_implicit_tls_byte_exact_body()

    def test_buffered_receive_over_tls_stores_the_body_byte_exact(self):
        self.check_implicit_tls_byte_exact_body(spool_receive="buffered")

    def check_implicit_tls_byte_exact_body(self, **settings):
        d = self.tls_daemon(**settings)
        s = implicit_session(self.sub_port)
        self.assertEqual(s.banner[0], 220)
        code, texts = s.send_cmd("EHLO c.test")
        self.assertEqual(code, 250)
        self.assertNotIn("STARTTLS", ehlo_keywords(texts))
        # A body of several spool chunks, with dot-stuffed lines, 8-bit text
        # and a line of exactly 998 octets.
        lines = [b"Subject: big", b""]
        for i in range(20000):
            lines.append(b"..line %d \xc3\xa9" % i if i % 7 == 0 else b"line %d" % i)
        lines.append(b"y" * 998)
        body = b"\r\n".join(lines) + b"\r\n"
        code, texts = s.mail("a@example.org", ["b@example.net"], body)
        self.assertEqual(code, 250, texts)
        qid = QUEUED.search(texts[-1]).group(1)
        stored = self.spool_show(d, qid)
        self.assertEqual(stored.split(b"\r\n", 5)[-1][-len(body):], body)
        self.assertTrue(stored.endswith(body))
        with smtplib.SMTP_SSL("127.0.0.1", self.sub_port, context=client_context(),
                              timeout=30) as c:
            c.sendmail("a@example.org", ["c@example.net"], BODY)
        self.assertEqual(len(self.queued(d)), 2)

    def test_bdat_pipelined_over_tls(self):
        self.check_bdat_pipelined_over_tls()

    def test_buffered_receive_bdat_pipelined_over_tls(self):
        self.check_bdat_pipelined_over_tls(spool_receive="buffered")

    def check_bdat_pipelined_over_tls(self, **settings):
        d = self.tls_daemon(**settings)
        s = implicit_session(self.sub_port)
        self.assertEqual(s.send_cmd("EHLO c.test")[0], 250)
        chunk1 = b"Subject: bdat\r\n\r\nfirst part\r\n.\r\n"
        chunk2 = b"second part, after a dot line\r\n"
        script = (b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
                  + b"BDAT %d\r\n" % len(chunk1) + chunk1
                  + b"BDAT %d LAST\r\n" % len(chunk2) + chunk2
                  + b"MAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\n"
                  + b"BDAT %d LAST\r\n" % len(chunk1) + chunk1)
        s.send(script)
        codes = [s.reply()[0] for _ in range(7)]
        self.assertEqual(codes, [250] * 7)
        rows = self.queued(d)
        self.assertEqual(len(rows), 2)
        bodies = sorted(self.spool_show(d, q) for q in rows)
        self.assertTrue(any(b.endswith(chunk1 + chunk2) for b in bodies))

    def test_plaintext_client_on_the_tls_port_gets_nothing(self):
        d = self.tls_daemon()
        s = harness.Session(self.sub_port, greet=False)
        s.send(b"EHLO c.test\r\n")
        self.assertTrue(s.closed())
        self.assertNotIn(b"220", s.buf)
        self.assertIn("TLS handshake with 127.0.0.1 failed", d.log())

    def test_silent_client_is_dropped_after_the_handshake_timeout(self):
        d = self.tls_daemon(smtpd_starttls_timeout="1s")
        raw = socket.create_connection(("127.0.0.1", self.sub_port), timeout=10)
        t0 = time.monotonic()
        self.assertEqual(raw.recv(100), b"")
        self.assertLess(time.monotonic() - t0, 5)
        self.assertIn("TLS handshake timeout from 127.0.0.1", d.log())

    def test_session_resumption(self):
        d = self.tls_daemon()
        ctx = client_context()
        s = implicit_session(self.sub_port, ctx)
        self.assertEqual(s.send_cmd("EHLO c.test")[0], 250)   # tickets arrive with data
        session = s.sock.session
        self.assertEqual(s.send_cmd("QUIT")[0], 221)
        s.close()
        raw = socket.create_connection(("127.0.0.1", self.sub_port), timeout=10)
        t = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        self.assertTrue(t.session_reused)
        self.assertEqual(t.recv(3), b"220")   # the server has finished its side
        t.close()
        self.assertIn(", resumed", d.log())

    def test_sighup_reloads_the_certificate_without_dropping_sessions(self):
        cert, key = certs.server_cert("server")
        other_cert, other_key = certs.server_cert("reloaded", cn="reloaded.localhost")
        live_cert, live_key = os.path.join(self.tmpdir, "c.pem"), os.path.join(self.tmpdir, "k.pem")
        shutil.copy(cert, live_cert)
        shutil.copy(key, live_key)
        d = self.tls_daemon(smtpd_tls_cert_file=live_cert, smtpd_tls_key_file=live_key)
        old = implicit_session(self.sub_port)
        self.assertEqual(old.send_cmd("EHLO c.test")[0], 250)
        shutil.copy(other_cert, live_cert)
        shutil.copy(other_key, live_key)
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "SIGHUP: reloaded" not in d.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        new = implicit_session(self.sub_port)
        subject = dict(x[0] for x in new.sock.getpeercert()["subject"])
        self.assertEqual(subject["commonName"], "reloaded.localhost")
        # The session from before the reload still works.
        code, texts = old.mail("a@example.org", ["b@example.net"], BODY)
        self.assertEqual(code, 250, texts)
        # A broken file keeps the old certificate.
        with open(live_cert, "w") as f:
            f.write("not a certificate\n")
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "kept its old certificate" not in d.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn("kept its old certificate", d.log())
        s = implicit_session(self.sub_port)
        self.assertEqual(s.banner[0], 220)

    def test_submissions_without_a_certificate_does_not_start(self):
        d = harness.Daemon(self.tmpdir)
        d.settings["listen"] = "127.0.0.1:%d/submissions" % d.port
        self.daemons.append(d)
        with self.assertRaises(RuntimeError) as e:
            d.start()
        self.assertIn("needs a certificate", str(e.exception))

    def test_many_tls_sessions_at_once(self):
        """Handshakes interleave on the workers: 40 clients, each with a few
        messages, all queued."""
        import concurrent.futures
        d = self.tls_daemon()

        def one(i):
            with smtplib.SMTP("127.0.0.1", d.port, timeout=60) as c:
                c.starttls(context=client_context())
                for k in range(3):
                    c.sendmail("a@example.org", ["r%d.%d@example.net" % (i, k)], BODY)
            return True

        with concurrent.futures.ThreadPoolExecutor(max_workers=20) as ex:
            self.assertTrue(all(ex.map(one, range(40))))
        self.assertEqual(len(self.queued(d)), 120)


if __name__ == "__main__":
    main()
