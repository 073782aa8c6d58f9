"""Outbound TLS against real next hops on loopback: aiosmtpd with STARTTLS
(Debian python3-aiosmtpd) and a scripted peer for the hostile cases
(RELIABILITY row 8: plaintext injected after "220 go ahead"). Levels:
smtp_tls_security_level may (default), encrypt and verify, in main.cf and
per destination in destination_policy."""
import os
import socket
import ssl
import threading
import time
import unittest

import certs
import harness
from harness import DaemonTest, free_port, main

try:
    from aiosmtpd.controller import Controller
    HAVE_AIOSMTPD = True
except ImportError:     # pragma: no cover
    HAVE_AIOSMTPD = False

BODY = b"Subject: out\r\n\r\nover TLS, or not\r\n..a dot line\r\n"


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.05)


def server_context(name="peer"):
    cert, key = certs.server_cert(name)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


class TlsCapture:
    """aiosmtpd offering STARTTLS (tls=True) or not; records, per message,
    whether it came over TLS."""

    def __init__(self, tls=True, ctx=None, users=None, exclude=()):
        self.lock = threading.Lock()
        self.txns = []
        self.logins = []        # (mechanism, user, accepted)
        self.port = free_port()
        kw = {}
        if tls:
            kw["tls_context"] = ctx or server_context()
        if users is not None:
            # A smarthost: AUTH required, offered only under TLS unless
            # there is no TLS at all.
            kw.update(authenticator=self._authenticator(users), auth_required=True,
                      auth_require_tls=tls, auth_exclude_mechanism=list(exclude))
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port,
                                     ready_timeout=10, **kw)
        self.controller.start()

    def stop(self):
        self.controller.stop()

    def _authenticator(self, users):
        from aiosmtpd.smtp import AuthResult

        def check(server, session, envelope, mechanism, data):
            user, pw = data.login.decode(), data.password.decode()
            ok = users.get(user) == pw
            with self.lock:
                self.logins.append((mechanism, user, ok))
            return AuthResult(success=ok, handled=False, auth_data=data if ok else None)
        return check

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.txns.append(dict(rcpts=list(envelope.rcpt_tos),
                                  content=bytes(envelope.original_content),
                                  tls=session.ssl is not None,
                                  user=(session.auth_data.login.decode()
                                        if session.authenticated and session.auth_data
                                        else None)))
        return "250 2.0.0 Ok: captured"

    def count(self):
        with self.lock:
            return len(self.txns)


class ScriptedPeer:
    """A small threaded SMTP server that offers STARTTLS and misbehaves on
    purpose after its 220 to STARTTLS:
      inject:  "220 go ahead" and a fake EHLO reply in the same segment,
               then a real handshake (the injected lines must be dropped);
      garbage: "220 go ahead", then plaintext instead of a handshake.
    Sessions without STARTTLS work normally; every message is recorded."""

    def __init__(self, mode):
        self.mode = mode
        self.ctx = server_context()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.messages = []      # (tls, rcpts, body)
        self.starttls_seen = 0
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.stopping = True
        self.sock.close()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _session(self, c):
        c.settimeout(20)
        f = c.makefile("rb")
        tls = False
        rcpts = []

        def say(line):
            c.sendall(line.encode() + b"\r\n")

        try:
            say("220 peer.test ESMTP")
            while True:
                line = f.readline()
                if not line:
                    return
                verb = line.strip().split(b" ")[0].upper()
                if verb == b"EHLO":
                    c.sendall(b"250-peer.test\r\n" + (b"" if tls else b"250-STARTTLS\r\n")
                              + b"250 8BITMIME\r\n")
                elif verb == b"STARTTLS":
                    with self.lock:
                        self.starttls_seen += 1
                    if self.mode == "inject":
                        c.sendall(b"220 2.0.0 go ahead\r\n250-peer.test\r\n250 CHUNKING\r\n")
                        c = self.ctx.wrap_socket(c, server_side=True)
                        f = c.makefile("rb")
                        tls = True
                    else:
                        c.sendall(b"220 2.0.0 go ahead\r\n")
                        time.sleep(0.2)
                        c.sendall(b"this is not a TLS record\r\n" * 8)
                        return
                elif verb == b"MAIL":
                    rcpts = []
                    say("250 2.1.0 Ok")
                elif verb == b"RCPT":
                    rcpts.append(line.strip().split(b":", 1)[1].strip(b"<>").decode())
                    say("250 2.1.5 Ok")
                elif verb == b"DATA":
                    say("354 go")
                    body = b""
                    while True:
                        l = f.readline()
                        if not l or l == b".\r\n":
                            break
                        body += l
                    with self.lock:
                        self.messages.append((tls, rcpts, body))
                    say("250 2.0.0 Ok")
                elif verb == b"QUIT":
                    say("221 bye")
                    return
                else:
                    say("250 Ok")
        except (OSError, ssl.SSLError):
            return
        finally:
            try:
                c.close()
            except OSError:
                pass


@unittest.skipUnless(HAVE_AIOSMTPD, "python3-aiosmtpd not installed")
class OutboundTlsTest(DaemonTest):
    def capture(self, **kw):
        cap = TlsCapture(**kw)
        self.addCleanup(cap.stop)
        return cap

    def send(self, d, rcpts, body=BODY):
        s = d.connect()
        try:
            code, texts = s.mail("a@example.org", rcpts, body)
            self.assertEqual(code, 250, texts)
        finally:
            s.close()

    def test_opportunistic_starttls_is_used_and_sessions_resume(self):
        cap = self.capture()
        d = self.daemon(relayhost="[127.0.0.1]:%d" % cap.port, max_messages_per_connection=1,
                        max_connections=1)
        for i in range(4):
            self.send(d, ["r%d@example.net" % i])
        wait_for(lambda: cap.count() == 4, 30, "4 deliveries")
        self.assertTrue(all(t["tls"] for t in cap.txns), cap.txns)
        self.assertTrue(all(t["content"].endswith(b"over TLS, or not\r\n.a dot line\r\n")
                            for t in cap.txns))
        log = d.log()
        self.assertIn("TLS to 127.0.0.1[127.0.0.1]:%d: TLSv1.3" % cap.port, log)
        self.assertIn("unverified", log)   # may: the certificate is not checked
        wait_for(lambda: ", resumed" in d.log(), 10, "a resumed session")
        wait_for(lambda: d.spool_list() == [], 20, "the spool to drain")

    def test_opportunistic_without_starttls_is_plaintext(self):
        cap = self.capture(tls=False)
        d = self.daemon(relayhost="[127.0.0.1]:%d" % cap.port)
        self.send(d, ["r@example.net"])
        wait_for(lambda: cap.count() == 1, 30, "the delivery")
        self.assertFalse(cap.txns[0]["tls"])
        self.assertNotIn("TLS to", d.log())

    def test_none_level_never_sends_starttls(self):
        cap = self.capture()
        d = self.daemon(relayhost="[127.0.0.1]:%d" % cap.port, smtp_tls_security_level="none")
        self.send(d, ["r@example.net"])
        wait_for(lambda: cap.count() == 1, 30, "the delivery")
        self.assertFalse(cap.txns[0]["tls"])

    def test_encrypt_per_destination_defers_without_tls(self):
        plain = self.capture(tls=False)
        also_plain = self.capture(tls=False)
        secure = self.capture()
        home = os.path.join(self.tmpdir, "maps")
        os.makedirs(home)
        tm, dp = os.path.join(home, "transport"), os.path.join(home, "policy")
        with open(tm, "w") as f:
            f.write("secure.example [127.0.0.1]:%d\n" % plain.port)
            f.write("tls.example [127.0.0.1]:%d\n" % secure.port)
            f.write("* [127.0.0.1]:%d\n" % also_plain.port)
        with open(dp, "w") as f:
            f.write("secure.example smtp_tls_security_level=encrypt\n")
            f.write("tls.example smtp_tls_security_level=encrypt\n")
        d = self.daemon(relayhost="", transport_map=tm, destination_policy=dp)
        self.send(d, ["a@secure.example"])
        self.send(d, ["b@tls.example"])
        self.send(d, ["c@other.example"])
        wait_for(lambda: secure.count() == 1 and also_plain.count() == 1, 30,
                 "two deliveries")
        self.assertTrue(secure.txns[0]["tls"])
        self.assertEqual(also_plain.txns[0]["rcpts"], ["c@other.example"])
        wait_for(lambda: "dsn=4.7.4, status=deferred" in d.log(), 20, "the deferral")
        self.assertIn("TLS is required, but was not offered", d.log())
        # The two delivered messages leave the queue once their status
        # records are durable: they ride the next fsync, a tick at the latest.
        wait_for(lambda: len(d.spool_list()) == 1, 10, "the delivered messages to leave the queue")
        rows = d.spool_list()
        self.assertEqual(len(rows), 1)
        self.assertEqual(plain.count(), 0)   # never sent in plaintext

    def test_verify_checks_the_certificate(self):
        good = self.capture()   # signed by the test CA, SAN 127.0.0.1
        cert, key = certs.self_signed("stranger")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        bad = self.capture(ctx=ctx)
        home = os.path.join(self.tmpdir, "maps")
        os.makedirs(home)
        tm = os.path.join(home, "transport")
        with open(tm, "w") as f:
            f.write("good.example [127.0.0.1]:%d\n" % good.port)
            f.write("bad.example [127.0.0.1]:%d\n" % bad.port)
        d = self.daemon(relayhost="", transport_map=tm, smtp_tls_security_level="verify",
                        smtp_tls_CAfile=certs.ca_file())
        self.send(d, ["a@good.example"])
        self.send(d, ["b@bad.example"])
        wait_for(lambda: good.count() == 1, 30, "the verified delivery")
        self.assertTrue(good.txns[0]["tls"])
        wait_for(lambda: "certificate verification failed" in d.log(), 20,
                 "the verification failure")
        self.assertIn(", verified", d.log())
        self.assertEqual(bad.count(), 0)
        wait_for(lambda: len(d.spool_list()) == 1, 10, "the delivered message to leave the queue")
        self.assertEqual(len(d.spool_list()), 1)

    def test_plaintext_injected_after_the_220_is_dropped(self):
        """Row 8 (CVE-2021-38371): lines sent with "220 go ahead" are not
        taken as the answer to the EHLO inside TLS."""
        peer = ScriptedPeer("inject")
        self.addCleanup(peer.stop)
        d = self.daemon(relayhost="[127.0.0.1]:%d" % peer.port)
        self.send(d, ["r@example.net"])
        wait_for(lambda: peer.messages, 30, "the delivery")
        tls, rcpts, body = peer.messages[0]
        self.assertTrue(tls)
        self.assertEqual(rcpts, ["r@example.net"])
        self.assertTrue(body.endswith(b"..a dot line\r\n"))

    def test_failed_opportunistic_handshake_falls_back_to_plaintext(self):
        peer = ScriptedPeer("garbage")
        self.addCleanup(peer.stop)
        d = self.daemon(relayhost="[127.0.0.1]:%d" % peer.port)
        self.send(d, ["r@example.net"])
        wait_for(lambda: peer.messages, 30, "the plaintext delivery")
        self.assertEqual(peer.starttls_seen, 1)
        self.assertFalse(peer.messages[0][0])
        self.assertIn("next connections in plaintext", d.log())


@unittest.skipUnless(HAVE_AIOSMTPD, "python3-aiosmtpd not installed")
class SmarthostAuthTest(DaemonTest):
    """relayhost with smtp_sasl_password_file: AUTH after STARTTLS, PLAIN or
    LOGIN, a refused login defers, no password over plaintext."""

    def capture(self, **kw):
        cap = TlsCapture(**kw)
        self.addCleanup(cap.stop)
        return cap

    def passwords(self, lines):
        path = os.path.join(self.tmpdir, "sasl_passwd")
        with open(path, "w") as f:
            f.write("# smarthost credentials\n" + lines)
        return path

    def send(self, d, rcpt):
        s = d.connect()
        try:
            code, texts = s.mail("a@example.org", [rcpt], BODY)
            self.assertEqual(code, 250, texts)
        finally:
            s.close()

    def test_auth_plain_after_starttls(self):
        cap = self.capture(users={"relay": "pa:ss"})
        pw = self.passwords("[127.0.0.1]:%d relay:pa:ss\n" % cap.port)
        d = self.daemon(relayhost="[127.0.0.1]:%d" % cap.port, smtp_sasl_password_file=pw)
        self.send(d, "r@example.net")
        wait_for(lambda: cap.count() == 1, 30, "the delivery")
        self.assertEqual(cap.logins, [("PLAIN", "relay", True)])
        self.assertTrue(cap.txns[0]["tls"])
        self.assertEqual(cap.txns[0]["user"], "relay")
        self.assertNotIn("pa:ss", d.log())

    def test_auth_login_when_plain_is_not_offered(self):
        cap = self.capture(users={"relay": "secret"}, exclude=("PLAIN",))
        pw = self.passwords("127.0.0.1 relay:secret\n")   # bare host: any port
        d = self.daemon(relayhost="[127.0.0.1]:%d" % cap.port, smtp_sasl_password_file=pw)
        self.send(d, "r@example.net")
        wait_for(lambda: cap.count() == 1, 30, "the delivery")
        self.assertEqual(cap.logins, [("LOGIN", "relay", True)])

    def test_refused_credentials_defer_and_keep_the_message(self):
        cap = self.capture(users={"relay": "right"})
        pw = self.passwords("[127.0.0.1]:%d relay:wrong\n" % cap.port)
        d = self.daemon(relayhost="[127.0.0.1]:%d" % cap.port, smtp_sasl_password_file=pw)
        self.send(d, "r@example.net")
        wait_for(lambda: "status=deferred" in d.log(), 30, "the deferral")
        self.assertIn("535", d.log())
        self.assertNotIn("wrong", d.log())
        self.assertEqual(cap.count(), 0)
        self.assertEqual(len(d.spool_list()), 1)

    def test_no_password_goes_over_plaintext(self):
        cap = self.capture(tls=False, users={"relay": "secret"})
        pw = self.passwords("[127.0.0.1]:%d relay:secret\n" % cap.port)
        d = self.daemon(relayhost="[127.0.0.1]:%d" % cap.port, smtp_sasl_password_file=pw)
        self.send(d, "r@example.net")
        wait_for(lambda: "dsn=4.7.4, status=deferred" in d.log(), 30, "the deferral")
        self.assertEqual(cap.logins, [])
        self.assertEqual(len(d.spool_list()), 1)

    def test_bad_password_file_stops_the_start_without_the_secret(self):
        pw = self.passwords("[127.0.0.1]:25 no-colon-topsecret\n")
        d = self.daemon(start=False, smtp_sasl_password_file=pw)
        with self.assertRaises(RuntimeError) as e:
            d.start()
        self.assertIn("sasl_passwd:2", str(e.exception))
        self.assertNotIn("topsecret", str(e.exception))


if __name__ == "__main__":
    main()
