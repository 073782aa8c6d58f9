"""io/dns against a real DNS server: dnsmasq on a loopback port.

Each test starts dnsmasq (Debian dnsmasq-base) on 127.0.0.1 and a free
UDP/TCP port with the test zone below, runs tests/dns_probe (a ring, a
resolver, the names on its command line) against it, and checks the lines
the probe prints. The failure modes dnsmasq cannot produce on demand
(SERVFAIL, silence) come from a few lines of Python answering on another
port. dnsmasq logs its queries to a file, so the cache tests count what
actually reached the server. Loopback only; every process is killed in
tearDown; the slowest test (a timeout) takes about 6 s.
"""
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

DNSMASQ = "/usr/sbin/dnsmasq"


def probe_path():
    if os.environ.get("DNS_PROBE"):
        return os.environ["DNS_PROBE"]
    # RINGMTA is <build>/io/ringmta; the probe is <build>/tests/dns_probe.
    ringmta = os.environ.get("RINGMTA", "build/io/ringmta")
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(ringmta))),
                        "tests", "dns_probe")


PROBE = probe_path()

# The zone, as dnsmasq options. --local=/test/ answers everything under
# .test from this configuration (NXDOMAIN or NODATA), never upstream.
ZONE = [
    "--local=/test/",
    "--local-ttl=30",
    # preference order; mx2 has IPv4 and IPv6
    "--mx-host=mx.test,mx1.test,10",
    "--mx-host=mx.test,mx2.test,20",
    "--host-record=mx1.test,127.0.0.2",
    "--host-record=mx2.test,127.0.0.3,::1",
    # equal preferences
    "--mx-host=eq.test,e1.test,10",
    "--mx-host=eq.test,e2.test,10",
    "--host-record=e1.test,127.0.1.1",
    "--host-record=e2.test,127.0.1.2",
    # no MX, an A record: implicit MX
    "--host-record=nomx.test,127.0.0.4",
    # no MX, no address: only a TXT record
    "--txt-record=empty.test,nothing here",
    # null MX (RFC 7505), twice: dnsmasq's own syntax, and raw RDATA
    # (preference 0x0000, then the root name 0x00) in case a dnsmasq
    # refuses "." as an exchange
    "--mx-host=nullmx.test,.,0",
    "--dns-rr=nullmx2.test,15,000000",
    # an MX host with no address is skipped; with none left: temporary
    "--mx-host=skip.test,nowhere.test,10",
    "--mx-host=skip.test,mx1.test,20",
    "--mx-host=dead.test,nowhere.test,10",
    # CNAMEs: the domain is an alias; an MX host is an alias
    "--cname=alias.test,mx.test",
    "--mx-host=cnmx.test,alias-host.test,10",
    "--cname=alias-host.test,mx1.test",
    # an MX exchange that is an address (Postfix uses it as one)
    "--mx-host=numeric.test,127.0.0.9,10",
    # 40 addresses: the answer is over 512 octets, so UDP comes back
    # truncated and c-ares asks again over TCP
] + ["--host-record=big.test,10.0.0.%d" % i for i in range(1, 41)] + [
    # for the cache tests, one name per test
    "--mx-host=cached.test,mx1.test,10",
    "--mx-host=shared.test,mx1.test,10",
]


def free_port():
    """A port on 127.0.0.1 free for both UDP and TCP right now."""
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


def raw_query(port, name, qtype=15, timeout=0.5):
    """One UDP query; returns the RCODE, or None without an answer."""
    msg = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        msg += bytes([len(label)]) + label.encode()
    msg += b"\0" + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(msg, ("127.0.0.1", port))
        try:
            data = s.recv(4096)
        except socket.timeout:
            return None
    return struct.unpack(">H", data[2:4])[0] & 0xF


class FakeServer:
    """A UDP DNS server that answers every query with one RCODE, or never."""

    def __init__(self, rcode):
        self.rcode = rcode
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.1)
        self.queries = 0
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while self.running:
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.queries += 1
            if self.rcode is None or len(data) < 12:
                continue
            # Header: same id, QR|RD|RA + rcode, the question echoed, no records.
            qdcount = struct.unpack(">H", data[4:6])[0]
            reply = data[:2] + struct.pack(">HHHHH", 0x8180 | self.rcode, qdcount, 0, 0, 0)
            self.sock.sendto(reply + data[12:], peer)

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


class Result:
    def __init__(self, line):
        f = line.split("\t")
        self.kind, self.name, self.status, self.dsn = f[0], f[1], f[2], f[3]
        self.implicit = f[4] == "implicit=1"
        self.hosts = []     # [(pref, name, [addr...])]
        if f[5]:
            for h in f[5].split(";"):
                parts = h.split(" ")
                self.hosts.append((int(parts[0]), parts[1], parts[2:]))
        self.text = f[6]

    def names(self):
        return [h[1] for h in self.hosts]

    def __repr__(self):
        return "<%s %s %s %s %r %s>" % (self.kind, self.name, self.status, self.dsn,
                                        self.hosts, self.text)


@unittest.skipUnless(os.access(DNSMASQ, os.X_OK), "dnsmasq not installed")
class DnsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ringmta-dns-")
        self.log = os.path.join(self.tmp, "dnsmasq.log")
        self.fakes = []
        self.proc = None
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [DNSMASQ, "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                 "--port=%d" % self.port, "--listen-address=127.0.0.1", "--bind-interfaces",
                 "--keep-in-foreground", "--pid-file=", "--log-queries",
                 "--log-facility=" + self.log] + ZONE,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.proc.poll() is None:
                # A name no test asks for, so the query logs stay exact.
                if raw_query(self.port, "ready.test", 1, 0.2) is not None:
                    return
            self.kill_dnsmasq()     # lost the port race, or slow: try again
        self.fail("dnsmasq did not start")

    def kill_dnsmasq(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
            self.proc.stderr.close()
        self.proc = None

    def tearDown(self):
        self.kill_dnsmasq()
        for f in self.fakes:
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def probe(self, *names, server=None, seed=None, sequential=False, timeout=30):
        args = [PROBE, "--server", server or "127.0.0.1:%d" % self.port]
        if seed is not None:
            args += ["--seed", str(seed)]
        if sequential:
            args += ["--sequential"]
        args += list(names)
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, text=True)
        if p.returncode == 77:
            self.skipTest("io_uring unavailable")
        self.assertEqual(p.returncode, 0, "probe failed:\n" + p.stdout + p.stderr)
        results = [Result(line) for line in p.stdout.splitlines()]
        self.assertEqual(len(results), len(names), p.stdout)
        # Lines come in the order lookups finished; give them back in the
        # order asked (equal names are interchangeable).
        ordered = []
        for spec in names:
            kind, name = spec.split(":", 1)
            match = next(r for r in results if (r.kind, r.name) == (kind, name))
            results.remove(match)
            ordered.append(match)
        return ordered

    def one(self, name, **kw):
        return self.probe(name, **kw)[0]

    def queries_logged(self, qtype, name):
        """How many queries for (qtype, name) reached dnsmasq."""
        want = "query[%s] %s " % (qtype, name)
        count = -1
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:   # the log is written asynchronously
            with open(self.log, errors="replace") as f:
                n = sum(1 for line in f if want in line)
            if n == count and n > 0:
                return n
            count = n
            time.sleep(0.2)
        return count

    def fake(self, rcode):
        f = FakeServer(rcode)
        self.fakes.append(f)
        return f

    # --- MX ordering and fallbacks ------------------------------------------

    def test_mx_hosts_in_preference_order_with_v4_and_v6(self):
        r = self.one("mx:mx.test")
        self.assertEqual(r.status, "OK", r)
        self.assertFalse(r.implicit)
        self.assertEqual(r.hosts, [(10, "mx1.test", ["127.0.0.2"]),
                                   (20, "mx2.test", ["127.0.0.3", "::1"])])

    def test_equal_preferences_come_in_random_order(self):
        orders = set()
        for r in self.probe(*["mx:eq.test"] * 30, seed=1):
            self.assertEqual(r.status, "OK", r)
            self.assertEqual([h[0] for h in r.hosts], [10, 10])
            orders.add(tuple(r.names()))
        self.assertEqual(orders, {("e1.test", "e2.test"), ("e2.test", "e1.test")})

    def test_same_seed_gives_same_orders(self):
        names = ["mx:eq.test"] * 8
        a = [r.names() for r in self.probe(*names, seed=99, sequential=True)]
        b = [r.names() for r in self.probe(*names, seed=99, sequential=True)]
        self.assertEqual(a, b)

    def test_no_mx_uses_the_domain_itself(self):
        r = self.one("mx:nomx.test")
        self.assertEqual(r.status, "OK", r)
        self.assertTrue(r.implicit)
        self.assertEqual(r.hosts, [(0, "nomx.test", ["127.0.0.4"])])

    def test_null_mx_is_permanent_5_1_10(self):
        for r in self.probe("mx:nullmx.test", "mx:nullmx2.test"):
            self.assertEqual((r.status, r.dsn), ("PERMANENT", "5.1.10"), r)
            self.assertIn("null MX", r.text)
            self.assertEqual(r.hosts, [])

    def test_nxdomain_is_permanent_5_1_2(self):
        r = self.one("mx:nx.test")
        self.assertEqual((r.status, r.dsn), ("PERMANENT", "5.1.2"), r)
        self.assertIn("NXDOMAIN", r.text)

    def test_no_mx_and_no_address_is_permanent(self):
        r = self.one("mx:empty.test")
        self.assertEqual((r.status, r.dsn), ("PERMANENT", "5.4.4"), r)
        self.assertTrue(r.implicit)

    def test_mx_host_without_address_is_skipped(self):
        r = self.one("mx:skip.test")
        self.assertEqual(r.status, "OK", r)
        self.assertEqual(r.hosts, [(20, "mx1.test", ["127.0.0.2"])])

    def test_no_mx_host_with_an_address_is_temporary(self):
        r = self.one("mx:dead.test")
        self.assertEqual((r.status, r.dsn), ("TEMPORARY", "4.4.3"), r)
        self.assertIn("nowhere.test", r.text)

    def test_cname_domain_and_cname_mx_host_are_followed(self):
        alias, cnmx = self.probe("mx:alias.test", "mx:cnmx.test")
        self.assertEqual(alias.status, "OK", alias)
        self.assertEqual(alias.names(), ["mx1.test", "mx2.test"])
        self.assertEqual(cnmx.status, "OK", cnmx)
        self.assertEqual(cnmx.hosts, [(10, "alias-host.test", ["127.0.0.2"])])

    def test_numeric_mx_exchange_is_used_as_an_address(self):
        r = self.one("mx:numeric.test")
        self.assertEqual(r.status, "OK", r)
        self.assertEqual(r.hosts, [(10, "127.0.0.9", ["127.0.0.9"])])

    def test_address_literal_domains_need_no_dns(self):
        v4, v6, bad = self.probe("mx:[127.0.0.5]", "mx:[IPv6:::1]", "mx:[not-an-address]")
        self.assertEqual(v4.hosts, [(0, "[127.0.0.5]", ["127.0.0.5"])])
        self.assertEqual(v6.hosts, [(0, "[IPv6:::1]", ["::1"])])
        self.assertEqual((bad.status, bad.dsn), ("PERMANENT", "5.1.2"), bad)

    def test_invalid_domain_is_permanent_without_a_query(self):
        r = self.one("mx:bad..name.test")
        self.assertEqual((r.status, r.dsn), ("PERMANENT", "5.1.2"), r)
        self.assertEqual(self.queries_logged("MX", "bad..name.test"), 0)

    def test_large_answer_over_tcp(self):
        r = self.one("host:big.test")
        self.assertEqual(r.status, "OK", r)
        addrs = r.hosts[0][2]
        self.assertEqual(len(addrs), 16)     # MX_MAX_ADDRS
        self.assertEqual(len(set(addrs)), 16)
        self.assertTrue(all(a.startswith("10.0.0.") for a in addrs), addrs)

    # --- temporary failures ---------------------------------------------------

    def test_refused_is_temporary(self):
        r = self.one("mx:outside.example")   # not under --local: dnsmasq refuses
        self.assertEqual((r.status, r.dsn), ("TEMPORARY", "4.4.3"), r)

    def test_servfail_is_temporary(self):
        f = self.fake(2)
        r = self.one("mx:broken.test", server="127.0.0.1:%d" % f.port)
        self.assertEqual((r.status, r.dsn), ("TEMPORARY", "4.4.3"), r)
        self.assertGreaterEqual(f.queries, 1)

    def test_timeout_is_temporary_and_bounded(self):
        f = self.fake(None)
        t0 = time.monotonic()
        r = self.one("mx:silent.test", server="127.0.0.1:%d" % f.port, timeout=30)
        elapsed = time.monotonic() - t0
        self.assertEqual((r.status, r.dsn), ("TEMPORARY", "4.4.3"), r)
        self.assertIn("timeout", r.text)
        self.assertGreaterEqual(f.queries, 2)   # tries
        self.assertLess(elapsed, 15)

    def test_unreachable_first_server_falls_over_to_the_next(self):
        dead = free_port()      # nothing listens: ICMP port unreachable
        r = self.one("mx:mx.test", server="127.0.0.1:%d, 127.0.0.1:%d" % (dead, self.port))
        self.assertEqual(r.status, "OK", r)
        self.assertEqual(r.names(), ["mx1.test", "mx2.test"])

    # --- cache ------------------------------------------------------------------

    def test_answers_are_cached(self):
        a, b = self.probe("mx:cached.test", "mx:cached.test", sequential=True)
        self.assertEqual(a.hosts, b.hosts)
        self.assertEqual(self.queries_logged("MX", "cached.test"), 1)
        self.assertEqual(self.queries_logged("A", "mx1.test"), 1)

    def test_negative_answers_are_cached(self):
        a, b = self.probe("mx:nx.test", "mx:nx.test", sequential=True)
        self.assertEqual(a.status, "PERMANENT")
        self.assertEqual(b.status, "PERMANENT")
        self.assertEqual(self.queries_logged("MX", "nx.test"), 1)

    def test_concurrent_lookups_share_one_query(self):
        rs = self.probe(*["mx:shared.test"] * 5)
        self.assertTrue(all(r.status == "OK" for r in rs), rs)
        self.assertEqual(self.queries_logged("MX", "shared.test"), 1)

    def test_temporary_failures_are_not_cached(self):
        f = self.fake(2)
        rs = self.probe("mx:broken.test", "mx:broken.test",
                        server="127.0.0.1:%d" % f.port, sequential=True)
        self.assertTrue(all(r.status == "TEMPORARY" for r in rs), rs)
        self.assertGreaterEqual(f.queries, 2)

    # --- next hops --------------------------------------------------------------

    def test_next_hop_resolves_without_mx(self):
        named, bracketed, literal, v6 = self.probe(
            "host:mx2.test", "host:[mx1.test]", "host:127.0.0.6", "host:[IPv6:::1]")
        self.assertEqual(named.hosts, [(0, "mx2.test", ["127.0.0.3", "::1"])])
        self.assertEqual(bracketed.hosts, [(0, "mx1.test", ["127.0.0.2"])])
        self.assertEqual(literal.hosts, [(0, "127.0.0.6", ["127.0.0.6"])])
        self.assertEqual(v6.hosts, [(0, "[IPv6:::1]", ["::1"])])
        self.assertEqual(self.queries_logged("MX", "mx2.test"), 0)

    def test_next_hop_that_does_not_resolve_is_temporary(self):
        r = self.one("host:nowhere.test")
        self.assertEqual((r.status, r.dsn), ("TEMPORARY", "4.4.3"), r)
        self.assertIn("next hop", r.text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
