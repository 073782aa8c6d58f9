"""Test certificates made with the openssl CLI: a private CA and server
certificates it signs (P-256, SAN localhost and 127.0.0.1), in a directory
that lives as long as the test process."""
import atexit
import os
import shutil
import subprocess
import tempfile

_DIR = None


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True,
                   timeout=60)


def directory():
    global _DIR
    if _DIR is None:
        _DIR = tempfile.mkdtemp(prefix="ringmta-certs-")
        atexit.register(shutil.rmtree, _DIR, True)
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
                 "-subj", "/CN=ringmta test CA", cwd=_DIR)
    return _DIR


def ca_file():
    return os.path.join(directory(), "ca.pem")


def server_cert(name, cn="localhost", san="DNS:localhost,IP:127.0.0.1"):
    """(cert_path, key_path) of a certificate signed by the test CA."""
    d = directory()
    cert, key = os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")
    if os.path.exists(cert):
        return cert, key
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("subjectAltName=%s\n" % san)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=d)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", name + ".pem", "-days", "30",
             "-extfile", name + ".ext", cwd=d)
    return cert, key


def self_signed(name, cn="untrusted.test"):
    """A self-signed certificate no CA vouches for."""
    d = directory()
    cert, key = os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")
    if not os.path.exists(cert):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "30",
                 "-subj", "/CN=" + cn, cwd=d)
    return cert, key
