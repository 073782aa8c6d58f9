#!/usr/bin/python3
"""test_loopback - ringmta-bench against ringmta-sink over 127.0.0.1.

Usage: test_loopback.py BENCH SINK   (meson passes both; suite 'bench')

Each scenario starts its own sink on a kernel-chosen port (the sink prints it),
runs the bench with bounded counts and checks both sides' JSON reports:
  1. 2000 messages x 20 sessions: 2000 x 250, zero errors, sink counted 2000.
  2. --keep / --dump, three sizes, 3 recipients, pipelining and reuse off:
     every kept body and envelope is byte-identical to what the bench sent.
  3. reply mix: the bench's 421/4xx/5xx counts per stage equal the sink's.
  4. --fsync with --latency: all accepted, end-of-data latency >= the delay.
  5. BDAT and pipelining by hand; --exit-after ends the sink by itself.
  6. STARTTLS (self-signed P-256 certificate from the openssl CLI; the TLS
     scenarios are skipped with a note if it is missing):
     a. reuse on, 2 threads, --keep/--dump: all accepted, one handshake per
        connection on both sides, bodies byte-identical;
     b. reuse off with --tls-resume, --keep/--dump: a handshake per message,
        the resumed counts agree, bodies byte-identical;
     c. the sink by hand (Python's ssl): input pipelined behind STARTTLS is
        discarded, EHLO is required again, no second STARTTLS;
     d. a server without STARTTLS: an error per session, exit status 1;
     e. a server that answers 220 and then no TLS: handshake failures, the
        session gives up, exit status 1.
Loopback only; every process has a timeout; temp dirs are removed.
"""
import glob
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading

BENCH, SINK = sys.argv[1], sys.argv[2]


def start_sink(*args):
    p = subprocess.Popen([SINK, "--listen", "127.0.0.1:0", "--json", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not m:
        p.kill()
        raise SystemExit(f"sink did not start: {line!r} {p.stderr.read()!r}")
    return p, int(m.group(1))


def final_report(p, stop=True):
    if stop:
        p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=15)
    assert p.returncode == 0, f"sink exited {p.returncode}: {err}"
    reports = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    assert reports and reports[-1]["final"], out
    return reports[-1]


def bench(port, *args, rc=0):
    r = subprocess.run([BENCH, "--target", f"127.0.0.1:{port}", "--json", "--io-timeout", "10",
                        *args], capture_output=True, text=True, timeout=45)
    assert r.returncode == rc, f"bench exited {r.returncode}, want {rc}: {r.stderr}"
    return json.loads(r.stdout)


def count(report, key, stage, code):
    return report[key].get(stage, {}).get(str(code), 0)


def scenario_plain():
    p, port = start_sink()
    try:
        b = bench(port, "--messages", "2000", "--sessions", "20", "--size", "1024")
    finally:
        s = final_report(p)
    assert b["messages"] == {"attempted": 2000, "accepted": 2000, "rejected": 0,
                             "io_failed": 0}, b["messages"]
    assert count(b, "replies", "eod", 250) == 2000, b["replies"]
    assert b["errors"] == 0 and b["error_replies"] == {}, b
    assert all(v == 0 for v in b["io_errors"].values()), b["io_errors"]
    assert b["latency_us"]["eod_reply"]["count"] == 2000
    assert b["latency_us"]["connect_banner"]["count"] == 20
    assert s["messages"] == 2000 and s["recipients"] == 2000, s
    assert s["connections"] == 20 and s["connections_open"] == 0, s
    assert s["msgs_per_conn"]["count"] == 20, s["msgs_per_conn"]
    assert s["bytes"] == b["bytes"], (s["bytes"], b["bytes"])
    assert b["tls_handshakes"] == 0 and "connect_tls" in b["latency_us"], b
    assert s["tls"] is False and s["tls_handshakes"] == 0 and s["messages_tls"] == 0, s
    print(f"plain: ok ({b['msg_per_s']:.0f} msg/s)")


def compare_kept(keep, dump, n, helo):
    """Every kept body and envelope equals what the bench sent; returns (sizes, dot lines)."""
    kept = sorted(glob.glob(os.path.join(keep, "*.eml")))
    assert len(kept) == n, len(kept)
    sizes, dot_lines = set(), 0
    for path in kept:
        body = open(path, "rb").read()
        m = re.search(rb"^Message-ID: <([0-9a-f]{16})\.", body, re.M)
        assert m, path
        sent = open(os.path.join(dump, m.group(1).decode() + ".eml"), "rb").read()
        assert body == sent, f"{path} differs from what the bench sent"
        sizes.add(len(body))
        dot_lines += len(re.findall(rb"\r\n\.", body))
        env = open(path[:-4] + ".env").read().splitlines()
        sent_env = open(os.path.join(dump, m.group(1).decode() + ".env")).read().splitlines()
        assert env[0] == "helo " + helo, env
        assert env[1:] == sent_env, (env, sent_env)
    return sizes, dot_lines


def scenario_keep(tmp):
    keep, dump = os.path.join(tmp, "keep"), os.path.join(tmp, "dump")
    p, port = start_sink("--keep", keep)
    try:
        b = bench(port, "--messages", "60", "--sessions", "4", "--rcpts", "3",
                  "--size-dist", "1024:50,10240:30,102400:20", "--pipelining", "off",
                  "--reuse", "off", "--dump", dump, "--helo", "keep.test")
    finally:
        s = final_report(p)
    assert b["messages"]["accepted"] == 60 and b["errors"] == 0, b
    assert s["messages"] == 60 and s["connections"] == 60, s
    assert s["msgs_per_conn"]["max"] == 1, s["msgs_per_conn"]
    sizes, dot_lines = compare_kept(keep, dump, 60, "keep.test")
    assert sizes == {1024, 10240, 102400}, sizes
    assert dot_lines > 0
    print(f"keep: ok (60 bodies byte-identical, {dot_lines} dot lines)")


def scenario_mix():
    p, port = start_sink("--connect-421", "20", "--rcpt-4xx", "10", "--rcpt-5xx", "5",
                         "--data-4xx", "5", "--data-5xx", "5", "--seed", "7")
    try:
        b = bench(port, "--messages", "1000", "--sessions", "20", "--rcpts", "2")
    finally:
        s = final_report(p)
    mix = s["mix"]
    assert min(mix.values()) > 0, mix
    pairs = [("banner", 421, "connect_421"), ("rcpt", 451, "rcpt_4xx"),
             ("rcpt", 550, "rcpt_5xx"), ("eod", 451, "data_4xx"), ("eod", 554, "data_5xx")]
    for stage, code, key in pairs:
        got = count(b, "error_replies", stage, code)
        assert got == mix[key], f"{stage} {code}: bench {got}, sink {mix[key]}"
    m = b["messages"]
    assert m["attempted"] == 1000 and m["io_failed"] == 0, m
    assert m["accepted"] + m["rejected"] == 1000, m
    assert m["accepted"] == s["messages"], (m, s["messages"])
    # Messages whose recipients were all refused end at DATA with 554.
    no_rcpt = m["rejected"] - mix["data_4xx"] - mix["data_5xx"]
    assert count(b, "error_replies", "data", 554) == no_rcpt, (b["error_replies"], no_rcpt)
    print(f"mix: ok ({json.dumps(mix)})")


def scenario_fsync_latency(tmp):
    p, port = start_sink("--fsync", "--fsync-dir", tmp, "--latency", "5")
    try:
        b = bench(port, "--messages", "200", "--sessions", "10")
    finally:
        s = final_report(p)
    assert b["messages"]["accepted"] == 200 and b["errors"] == 0, b
    assert s["messages"] == 200 and s["store_errors"] == 0, s
    lat = b["latency_us"]["eod_reply"]
    assert lat["min"] >= 5000, lat
    print(f"fsync+latency: ok (eod p50 {lat['p50']} us)")


def smtp_script(port, script, until):
    """Sends script in one write (pipelined); returns the replies up to `until`."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.recv(4096)  # banner first, as a client must
        c.sendall(script)
        data = b""
        while until not in data:
            chunk = c.recv(65536)
            assert chunk, data
            data += chunk
        return data.decode()


def scenario_bdat_exit(tmp):
    keep = os.path.join(tmp, "bdat")
    p, port = start_sink("--keep", keep, "--exit-after", "2")
    replies = smtp_script(port, b"EHLO t.test\r\nMAIL FROM:<a@t.test>\r\nRCPT TO:<b@t.test>\r\n"
                                b"BDAT 7\r\n.\r\nhellBDAT 7 LAST\r\no .\r\n\r\n"
                                b"MAIL FROM:<a@t.test>\r\nRCPT TO:<c@t.test>\r\nDATA\r\n",
                         b"354 ")
    # DATA must be answered 354 before the body is sent (RFC 2920 3.1).
    assert replies.endswith("354 End data with <CR><LF>.<CR><LF>\r\n"), replies
    codes = [l[:4] for l in replies.splitlines()]
    assert codes == ["250-"] * 6 + ["250 ", "250 ", "250 ", "250 ", "250 ", "250 ", "250 ",
                                    "354 "], codes
    assert "7 octets received" in replies, replies
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.recv(4096)
        c.sendall(b"EHLO t.test\r\nMAIL FROM:<a@t.test>\r\nRCPT TO:<c@t.test>\r\nDATA\r\n")
        buf = b""
        while b"354 " not in buf:
            buf += c.recv(4096)
        c.sendall(b"..x\r\n.\r\nQUIT\r\n")
        while b"221 " not in buf:
            chunk = c.recv(4096)
            assert chunk, buf
            buf += chunk
    s = final_report(p, stop=False)  # --exit-after 2: the sink ends by itself
    assert s["messages"] == 2 and s["bdat_chunks"] == 2, s
    bodies = sorted(open(f, "rb").read() for f in glob.glob(os.path.join(keep, "*.eml")))
    assert bodies == [b".\r\nhello .\r\n\r\n", b".x\r\n"], bodies
    print("bdat+exit-after: ok")


def make_cert(tmp):
    """A self-signed P-256 certificate and key; None when there is no openssl CLI."""
    exe = shutil.which("openssl")
    if exe is None:
        return None
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run([exe, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", "/CN=sink.test", "-keyout", key,
                    "-out", cert], check=True, capture_output=True, timeout=30)
    return cert, key


def assert_tls_clean(b, s, connections):
    """One handshake per connection on both sides, nothing failed."""
    assert b["connections"] == connections, (b["connections"], connections)
    assert b["tls_handshakes"] == connections, b
    assert b["tls_failures"] == 0 and b["starttls_missing"] == 0, b
    assert count(b, "replies", "starttls", 220) == connections, b["replies"]
    assert count(b, "replies", "ehlo", 250) == 2 * connections, b["replies"]  # before, after
    assert b["latency_us"]["connect_tls"]["count"] == connections, b["latency_us"]
    assert b["latency_us"]["connect_tls"]["min"] >= b["latency_us"]["connect_banner"]["min"]
    assert b["handshakes_per_s"] > 0, b
    assert s["tls"] is True and s["connections"] == connections, s
    assert s["starttls"] == connections and s["tls_handshakes"] == connections, s
    assert s["tls_failures"] == 0 and s["protocol_errors"] == 0, s
    assert s["tls_resumed"] == b["tls_resumed"], (s["tls_resumed"], b["tls_resumed"])
    assert s["messages_tls"] == s["messages"] == b["messages"]["accepted"], s


def scenario_tls_reuse(tmp, cert):
    keep, dump = os.path.join(tmp, "tls-keep"), os.path.join(tmp, "tls-dump")
    p, port = start_sink("--tls-cert", cert[0], "--tls-key", cert[1], "--keep", keep)
    try:
        b = bench(port, "--starttls", "--messages", "300", "--sessions", "6", "--threads", "2",
                  "--rcpts", "2", "--size-dist", "1024:60,10240:30,102400:10",
                  "--dump", dump, "--helo", "tls.test")
    finally:
        s = final_report(p)
    assert b["messages"] == {"attempted": 300, "accepted": 300, "rejected": 0,
                             "io_failed": 0}, b["messages"]
    assert b["errors"] == 0 and b["error_replies"] == {}, b
    assert all(v == 0 for v in b["io_errors"].values()), b["io_errors"]
    assert_tls_clean(b, s, 6)
    assert b["tls_resumed"] == 0, b  # no --tls-resume
    assert s["messages"] == 300 and s["recipients"] == 600 and s["bytes"] == b["bytes"], s
    sizes, _ = compare_kept(keep, dump, 300, "tls.test")
    assert sizes == {1024, 10240, 102400}, sizes
    print(f"tls reuse on: ok (300 bodies byte-identical over 6 TLS connections)")


def scenario_tls_conn_per_msg(tmp, cert):
    keep, dump = os.path.join(tmp, "tls1-keep"), os.path.join(tmp, "tls1-dump")
    p, port = start_sink("--tls-cert", cert[0], "--tls-key", cert[1], "--keep", keep)
    try:
        b = bench(port, "--starttls", "--tls-resume", "--reuse", "off", "--messages", "80",
                  "--sessions", "4", "--size-dist", "1024:70,102400:30", "--pipelining", "off",
                  "--dump", dump, "--helo", "tls1.test")
    finally:
        s = final_report(p)
    assert b["messages"]["accepted"] == 80 and b["errors"] == 0, b
    assert_tls_clean(b, s, 80)
    assert s["msgs_per_conn"]["max"] == 1, s["msgs_per_conn"]
    # Each session's first handshake is full; later ones resume a pooled ticket.
    assert b["tls_resumed"] >= 80 - 4 * 2, b["tls_resumed"]
    assert b["tls_resumed"] < 80
    compare_kept(keep, dump, 80, "tls1.test")
    print(f"tls reuse off + resume: ok (80 handshakes, {b['tls_resumed']} resumed, "
          f"{b['handshakes_per_s']:.0f}/s)")


def read_until(sock, want):
    data = b""
    while want not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data.decode()


def scenario_tls_by_hand(cert):
    p, port = start_sink("--tls-cert", cert[0], "--tls-key", cert[1])
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.recv(4096)
            # A command pipelined behind STARTTLS must not be run after the handshake.
            raw.sendall(b"EHLO a.test\r\nSTARTTLS\r\nMAIL FROM:<injected@x.test>\r\n")
            pre = read_until(raw, b"220 2.0.0")
            assert "250-STARTTLS\r\n" in pre, pre
            assert pre.endswith("220 2.0.0 Ready to start TLS\r\n"), pre
            with ctx.wrap_socket(raw) as t:
                assert t.version() in ("TLSv1.2", "TLSv1.3"), t.version()
                t.sendall(b"MAIL FROM:<a@t.test>\r\n")
                r = read_until(t, b"\r\n")
                assert r.startswith("503 5.5.1 EHLO first"), r   # not 250, not "nested"
                t.sendall(b"EHLO b.test\r\n")
                r = read_until(t, b"250 ")
                assert "STARTTLS" not in r and "greets b.test" in r, r
                t.sendall(b"STARTTLS\r\n")
                assert read_until(t, b"\r\n").startswith("503 "), "second STARTTLS"
                t.sendall(b"MAIL FROM:<a@t.test>\r\nRCPT TO:<b@t.test>\r\nDATA\r\n")
                read_until(t, b"354 ")
                t.sendall(b"hi\r\n.\r\nQUIT\r\n")
                assert "221 " in read_until(t, b"221 ")
    finally:
        s = final_report(p)
    assert s["messages"] == 1 and s["tls_handshakes"] == 1 and s["starttls"] == 1, s
    assert s["protocol_errors"] == 2, s  # the MAIL before EHLO and the second STARTTLS
    assert s["messages_tls"] == 1, s
    print("tls by hand: ok (pipelined command discarded, EHLO required again)")


def scenario_tls_missing():
    p, port = start_sink()  # no certificate: no STARTTLS in EHLO, 502 to STARTTLS
    try:
        b = bench(port, "--starttls", "--messages", "50", "--sessions", "3", rc=1)
    finally:
        s = final_report(p)
    assert b["starttls_missing"] == 3 and b["io_errors"]["starttls"] == 3, b
    assert b["errors"] == 3 and b["tls_handshakes"] == 0, b
    assert b["messages"]["attempted"] == 0 and s["messages"] == 0, (b, s)
    print("tls missing: ok (3 sessions, 3 errors, exit 1)")


def fake_starttls_server(lsock, stop):
    """Offers STARTTLS, says 220 to it, then answers the ClientHello with plaintext."""
    lsock.settimeout(0.2)
    while not stop.is_set():
        try:
            c, _ = lsock.accept()
        except socket.timeout:
            continue
        with c:
            try:
                c.settimeout(5)
                c.sendall(b"220 fake.test ESMTP\r\n")
                read_until(c, b"\r\n")
                c.sendall(b"250-fake.test\r\n250 STARTTLS\r\n")
                read_until(c, b"STARTTLS\r\n")
                c.sendall(b"220 go ahead\r\n")
                c.recv(4096)  # the ClientHello
                c.sendall(b"500 this is not TLS\r\n")
            except (OSError, AssertionError):
                pass


def scenario_tls_handshake_fails():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    stop = threading.Event()
    th = threading.Thread(target=fake_starttls_server, args=(lsock, stop), daemon=True)
    th.start()
    try:
        b = bench(lsock.getsockname()[1], "--starttls", "--messages", "5", "--sessions", "1",
                  rc=1)
    finally:
        stop.set()
        th.join(5)
        lsock.close()
    # The session tries 10 times in a row, then gives up (BENCH_MAX_CONNECT_FAILURES).
    assert b["tls_failures"] == 10 and b["io_errors"]["tls"] == 10, b
    assert b["tls_handshakes"] == 0 and b["messages"]["attempted"] == 0, b
    assert count(b, "replies", "starttls", 220) == 10, b["replies"]
    print("tls handshake failure: ok (10 failures, the session gave up)")


def main():
    with tempfile.TemporaryDirectory(prefix="ringmta-bench-test.") as tmp:
        scenario_plain()
        scenario_keep(tmp)
        scenario_mix()
        scenario_fsync_latency(tmp)
        scenario_bdat_exit(tmp)
        cert = make_cert(tmp)
        if cert is None:
            print("tls: SKIPPED (no openssl CLI to make a certificate)")
            return 0
        scenario_tls_reuse(tmp, cert)
        scenario_tls_conn_per_msg(tmp, cert)
        scenario_tls_by_hand(cert)
        scenario_tls_missing()
        scenario_tls_handshake_fails()
    return 0


if __name__ == "__main__":
    sys.exit(main())
