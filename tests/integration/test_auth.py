"""SMTP AUTH (RFC 4954) against the real daemon: submission (587, STARTTLS
then AUTH) and submissions (465, implicit TLS), with swaks and smtplib, and
the hostile rows of RELIABILITY.md: 23 (broken AUTH input), 24 (AUTH in
cleartext), 25 (password guessing). Passwords are crypt(3) SHA-512 hashes
made with `openssl passwd -6`."""
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import warnings

import certs
import harness
from harness import DaemonTest, main

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

BODY = b"Subject: auth\r\n\r\nsubmitted\r\n"
QUEUED = re.compile(r"queued as ([0-9a-f]{16})")
PLAIN_ALICE = "AGFsaWNlAHMzY3JldA=="      # \0alice\0s3cret


def sha512_hash(password):
    out = subprocess.run(["openssl", "passwd", "-6", password], check=True,
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def client_context():
    return ssl.create_default_context(cafile=certs.ca_file())


class Tls(harness.Session):
    def starttls(self):
        self.send(b"STARTTLS\r\n")
        assert self.reply()[0] == 220
        self.sock = client_context().wrap_socket(self.sock, server_hostname="localhost")

    def exchange(self, line):
        self.send(line + "\r\n")
        return self.reply()


def implicit(port):
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    s = Tls.__new__(Tls)
    s.sock = client_context().wrap_socket(raw, server_hostname="localhost")
    s.buf = b""
    s.banner = s.reply()
    return s


class AuthTest(DaemonTest):
    def auth_daemon(self, users=None, **settings):
        cert, key = certs.server_cert("server")
        self.passwd = os.path.join(self.tmpdir, "passwd")
        users = users or {"alice": sha512_hash("s3cret")}
        with open(self.passwd, "w") as f:
            for u, h in users.items():
                f.write("%s:%s\n" % (u, h))
        self.sub_port = harness.free_port()
        self.subs_port = harness.free_port()
        opts = dict(smtpd_tls_cert_file=cert, smtpd_tls_key_file=key,
                    smtpd_auth_password_file=self.passwd,
                    relay_networks="192.0.2.0/24")   # loopback is not trusted here
        opts.update(settings)
        d = harness.Daemon(self.tmpdir, **opts)
        d.settings["listen"] = ("127.0.0.1:%d, 127.0.0.1:%d/submission, "
                                "127.0.0.1:%d/submissions" % (d.port, self.sub_port,
                                                               self.subs_port))
        self.daemons.append(d)
        return d.start()

    def submission(self):
        s = Tls(self.sub_port)
        assert s.exchange("EHLO c.test")[0] == 250
        s.starttls()
        code, texts = s.exchange("EHLO c.test")
        assert code == 250
        return s, texts

    def spool_show(self, d, qid):
        return subprocess.run([harness.RINGMTA_CTL, "-o", "spool_dir=" + d.spool, "spool",
                               "show", qid], check=True, capture_output=True,
                              timeout=60).stdout

    def test_swaks_submission_starttls_auth_plain(self):
        d = self.auth_daemon()
        out = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % self.sub_port, "--tls",
                              "--auth", "PLAIN", "--auth-user", "alice", "--auth-password",
                              "s3cret", "--from", "alice@example.org",
                              "--to", "someone@elsewhere.example"],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("235 2.7.0", out.stdout)
        qid = QUEUED.search(out.stdout).group(1)
        head = self.spool_show(d, qid).split(b"\r\n\r\n")[0]
        self.assertIn(b"with ESMTPSA id", head)
        self.assertIn(b"(Authenticated sender: alice)", head)
        self.assertIn("AUTH from 127.0.0.1: user=alice", d.log())

    def test_smtplib_submissions_login_and_plain(self):
        d = self.auth_daemon()
        for mech in ("LOGIN", "PLAIN"):
            with smtplib.SMTP_SSL("127.0.0.1", self.subs_port, context=client_context(),
                                  timeout=30) as c:
                c.ehlo("c.test")
                self.assertEqual(c.esmtp_features.get("auth", "").split(), ["PLAIN", "LOGIN"])
                c.user, c.password = "alice", "s3cret"
                code, _ = c.auth(mech, getattr(c, "auth_" + mech.lower()))
                self.assertEqual(code, 235)
                c.sendmail("alice@example.org", ["x@elsewhere.example"], BODY)
            with smtplib.SMTP_SSL("127.0.0.1", self.subs_port, context=client_context(),
                                  timeout=30) as c:
                with self.assertRaises(smtplib.SMTPAuthenticationError) as e:
                    c.login("alice", "wrong")
                self.assertEqual(e.exception.smtp_code, 535)
        self.assertEqual(len(d.spool_list()), 2)

    def test_submission_needs_auth_and_smtp_port_still_denies_relay(self):
        """Authenticated clients may relay; unauthenticated ones may not."""
        d = self.auth_daemon()
        s, _ = self.submission()
        code, texts = s.exchange("MAIL FROM:<alice@example.org>")
        self.assertEqual(code, 530)
        self.assertTrue(texts[-1].startswith("5.7.0"), texts)
        self.assertEqual(s.exchange("AUTH PLAIN " + PLAIN_ALICE)[0], 235)
        code, texts = s.mail("alice@example.org", ["far@elsewhere.example"], BODY)
        self.assertEqual(code, 250, texts)
        p = Tls(d.port)
        self.assertEqual(p.exchange("EHLO c.test")[0], 250)
        self.assertEqual(p.exchange("MAIL FROM:<alice@example.org>")[0], 250)
        code, texts = p.exchange("RCPT TO:<far@elsewhere.example>")
        self.assertEqual(code, 554)
        self.assertTrue(texts[-1].startswith("5.7.1"), texts)

    def test_auth_in_cleartext_is_refused_unchecked(self):
        """Row 24: 530 5.7.0 and no credential check (nothing logged)."""
        d = self.auth_daemon()
        s = Tls(self.sub_port)
        code, texts = s.exchange("EHLO c.test")
        self.assertNotIn("AUTH PLAIN LOGIN", texts)
        self.assertIn("STARTTLS", texts)
        code, texts = s.exchange("AUTH PLAIN " + PLAIN_ALICE)
        self.assertEqual(code, 530)
        self.assertTrue(texts[-1].startswith("5.7.0"), texts)
        self.assertNotIn("AUTH from", d.log())

    def test_broken_auth_input(self):
        """Row 23."""
        d = self.auth_daemon()
        s, texts = self.submission()
        self.assertIn("AUTH PLAIN LOGIN", texts)
        cases = [
            ("AUTH PLAIN !!!!", 501, "5.5.2"),
            ("AUTH PLAIN AGEAYgBj", 501, "5.5.2"),         # \0a\0b\0c: four fields
            ("AUTH PLAIN YWxpY2U=", 501, "5.5.2"),         # no NUL at all
            ("AUTH XOAUTH2 dG9rZW4=", 504, "5.5.4"),
        ]
        for line, code, enh in cases:
            got, texts = s.exchange(line)
            self.assertEqual(got, code, (line, texts))
            self.assertTrue(texts[-1].startswith(enh), (line, texts))
        self.assertEqual(s.exchange("AUTH PLAIN")[0], 334)
        code, texts = s.exchange("*")
        self.assertEqual((code, texts[-1][:5]), (501, "5.7.0"))
        self.assertEqual(s.exchange("AUTH PLAIN")[0], 334)
        code, texts = s.exchange("A" * 12289)
        self.assertEqual((code, texts[-1][:5]), (500, "5.5.6"))
        # The next exchange starts fresh and works.
        self.assertEqual(s.exchange("AUTH PLAIN " + PLAIN_ALICE)[0], 235)
        self.assertNotIn("AUTH from 127.0.0.1 failed", d.log())

    def test_password_guessing_is_cut_off(self):
        """Row 25: past smtpd_client_auth_failure_limit, 421 and close, and
        later attempts are refused without a check."""
        d = self.auth_daemon(smtpd_client_auth_failure_limit="5")
        wrong = "AGFsaWNlAGd1ZXNz"           # \0alice\0guess
        for attempt in range(1, 6):
            s = implicit(self.subs_port)
            self.assertEqual(s.exchange("EHLO c.test")[0], 250)
            code, texts = s.exchange("AUTH PLAIN " + wrong)
            self.assertEqual(code, 535, texts)
            if attempt < 5:
                s.close()
                continue
            code, texts = s.reply()
            self.assertEqual(code, 421)
            self.assertTrue(texts[-1].startswith("4.7.0"), texts)
            self.assertTrue(s.closed())
        # The right password no longer helps from this address, for now.
        s = implicit(self.subs_port)
        self.assertEqual(s.exchange("EHLO c.test")[0], 250)
        code, texts = s.exchange("AUTH PLAIN " + PLAIN_ALICE)
        self.assertEqual(code, 421)
        self.assertEqual(d.log().count("AUTH from 127.0.0.1 failed"), 5)

    def test_a_slow_hash_does_not_stall_other_sessions(self):
        """Verification runs on the pool: while bob's expensive hash is being
        computed, another client on the same daemon is served."""
        slow = crypt.crypt("pw", "$6$rounds=3000000$abcdefgh$")
        d = self.auth_daemon(users={"alice": sha512_hash("s3cret"), "bob": slow}, workers=1)
        s = implicit(self.subs_port)
        self.assertEqual(s.exchange("EHLO c.test")[0], 250)
        t0 = time.monotonic()
        s.send("AUTH PLAIN AGJvYgBwdw==\r\n")        # \0bob\0pw
        other = implicit(self.subs_port)
        self.assertEqual(other.exchange("EHLO c.test")[0], 250)
        self.assertEqual(other.exchange("NOOP")[0], 250)
        served_at = time.monotonic()
        code, _ = s.reply()
        done_at = time.monotonic()
        self.assertEqual(code, 235)
        self.assertLess(served_at, done_at)
        self.assertGreater(done_at - t0, 0.2, "the slow hash was not slow; test is moot")

    def test_sighup_reloads_the_password_file(self):
        d = self.auth_daemon()
        with open(self.passwd, "a") as f:
            f.write("bob:%s\n" % sha512_hash("hunter2"))
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reloaded 2 users" not in d.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        with smtplib.SMTP_SSL("127.0.0.1", self.subs_port, context=client_context(),
                              timeout=30) as c:
            self.assertEqual(c.login("bob", "hunter2")[0], 235)

    def test_bad_password_file_stops_the_start(self):
        bad = os.path.join(self.tmpdir, "bad")
        with open(bad, "w") as f:
            f.write("alice:not-a-hash\n")
        d = harness.Daemon(self.tmpdir, smtpd_auth_password_file=bad)
        self.daemons.append(d)
        with self.assertRaises(RuntimeError) as e:
            d.start()
        self.assertIn("bad:1", str(e.exception))


if __name__ == "__main__":
    main()
