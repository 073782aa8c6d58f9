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
Loopback only; every process has a timeout; temp dirs are removed.
"""
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile

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


def bench(port, *args):
    r = subprocess.run([BENCH, "--target", f"127.0.0.1:{port}", "--json", "--io-timeout", "10",
                        *args], capture_output=True, text=True, timeout=45)
    assert r.returncode == 0, f"bench exited {r.returncode}: {r.stderr}"
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
    print(f"plain: ok ({b['msg_per_s']:.0f} msg/s)")


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
    kept = sorted(glob.glob(os.path.join(keep, "*.eml")))
    assert len(kept) == 60, len(kept)
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
        assert env[0] == "helo keep.test", env
        assert env[1:] == sent_env, (env, sent_env)
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


def main():
    with tempfile.TemporaryDirectory(prefix="ringmta-bench-test.") as tmp:
        scenario_plain()
        scenario_keep(tmp)
        scenario_mix()
        scenario_fsync_latency(tmp)
        scenario_bdat_exit(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
