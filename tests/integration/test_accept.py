"""Accepting mail with real clients: swaks, smtplib, Postfix's smtp-source.

The issue's "done when": a message sent with swaks gets 250 and shows in
ringmta-ctl spool list; smtp-source -s 20 -m 2000 gets 2000 x 250, and after
kill -9 and a restart all 2000 are listed.
"""
import re
import smtplib
import subprocess

from harness import DaemonTest, main


class AcceptTest(DaemonTest):
    def test_swaks_message_is_queued_and_listed(self):
        d = self.daemon()
        out = subprocess.run(
            ["swaks", "--server", "127.0.0.1:%d" % d.port, "--from", "alice@example.org",
             "--to", "bob@example.net", "--timeout", "20"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        m = re.search(r"<-  250 2\.0\.0 Ok: queued as ([0-9a-f]{16})", out.stdout)
        self.assertIsNotNone(m, out.stdout)
        self.assertEqual(d.stop(), 0)
        rows = d.spool_list()
        self.assertEqual([(r[0], r[1], r[2], r[4]) for r in rows],
                         [(m.group(1), "<alice@example.org>", 1, "queued")])

    def test_smtplib_multiple_recipients_and_restart(self):
        d = self.daemon()
        body = "Subject: hi\r\n\r\nline one\r\n.leading dot\r\n"
        with smtplib.SMTP("127.0.0.1", d.port, timeout=20) as c:
            refused = c.sendmail("a@example.org", ["x@one.example", "y@two.example",
                                                   "z@one.example"], body)
            self.assertEqual(refused, {})
            code, _ = c.noop()
            self.assertEqual(code, 250)
        self.assertEqual(d.stop(), 0)
        rows = d.spool_list()
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][2], 3)
        # Restart: the message is still there, and new mail is accepted.
        d.start()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=20) as c:
            c.sendmail("b@example.org", ["q@one.example"], "Subject: 2\r\n\r\nx\r\n")
        d.stop()
        rows = d.spool_list()
        self.assertEqual(len(rows), 2)
        self.assertEqual(len({r[0] for r in rows}), 2, "queue ids are unique across restarts")

    def test_smtp_source_2000_then_kill9_all_listed(self):
        d = self.daemon()
        out = subprocess.run(
            ["smtp-source", "-s", "20", "-m", "2000", "-f", "a@example.org",
             "-t", "b@example.net", "127.0.0.1:%d" % d.port],
            capture_output=True, text=True, timeout=240)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        accepted = d.log().count("from=<a@example.org>")
        self.assertEqual(accepted, 2000)
        d.kill9()
        rows = d.spool_list()
        self.assertEqual(len(rows), 2000)
        self.assertTrue(all(r[1] == "<a@example.org>" and r[2] == 1 for r in rows))
        # And the daemon comes back with them (recovery after kill -9).
        d.start()
        self.assertTrue("recovered 2000 queued messages" in d.log(), "recovery count")


if __name__ == "__main__":
    main()
