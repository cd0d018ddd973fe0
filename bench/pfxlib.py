"""pfxlib — shared bits of the benchmarks that run a private Postfix next to
posthorn (bench/queue-flood, bench/relay): a Postfix instance from its own
config directory under a temp dir, loopback only, no chroot, stopped
afterwards; a posthorn daemon in a temp data dir; small timing helpers.

Postfix is a benchmark peer only. It is installed (debconf "No
configuration", so the system instance never starts) by bench/smtp-accept
when missing and we are root; ensure_postfix() does the same here.
"""
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def log(name, msg):
    print(f"{name}: {msg}", file=sys.stderr, flush=True)


def free_port(host="127.0.0.1"):
    s = socket.socket()
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=60, proc=None, host="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.01)
    return False


def median_time(fn, runs=3):
    ts = []
    for _ in range(runs):
        t = time.monotonic()
        fn()
        ts.append(time.monotonic() - t)
    return statistics.median(ts)


def tool(name):
    return shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)


def ensure_postfix(name):
    if tool("postfix"):
        return True
    if os.geteuid() != 0:
        log(name, "postfix is not installed and we are not root: posthorn only")
        return False
    log(name, "installing postfix (benchmark peer only; 'No configuration', the system instance is not started)")
    try:
        subprocess.run(["debconf-set-selections"], input=b"postfix postfix/main_mailer_type select No configuration\n",
                       check=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        r = subprocess.run(["apt-get", "install", "-y", "postfix"], env=env, capture_output=True)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True)
            r = subprocess.run(["apt-get", "install", "-y", "postfix"], env=env, capture_output=True)
        return r.returncode == 0
    except (OSError, subprocess.CalledProcessError) as e:
        log(name, f"cannot install postfix: {e}")
        return False


# ---- posthorn -----------------------------------------------------------------

class Posthorn:
    def __init__(self, root: Path, conf_extra="", name="bench"):
        self.bin = os.environ.get("POSTHORN_BIN") or str(REPO / "build" / "posthorn")
        if not os.access(self.bin, os.X_OK):
            raise RuntimeError(f"{self.bin} not built (run make)")
        self.name = name
        self.data = root / "posthorn"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.sub_port = free_port()
        (self.data / "posthorn.conf").write_text(
            f"smtp_listen = 127.0.0.1:{self.port}\n"
            f"submission_listen = 127.0.0.1:{self.sub_port}\n"
            f"pop3_listen = 127.0.0.1:{free_port()}\n"
            "log_stderr = no\n" + conf_extra)
        self.logpath = root / "posthorn.log"
        self.proc = None

    def start(self, timeout=600):
        """Starts and waits until SMTP accepts; returns the seconds it took."""
        logf = open(self.logpath, "ab")
        t = time.monotonic()
        self.proc = subprocess.Popen([self.bin, "serve", "--data", str(self.data)], stdout=logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        if not wait_port(self.port, timeout, self.proc):
            raise RuntimeError("posthorn did not start:\n" + self.logpath.read_text(errors="replace")[-2000:])
        return time.monotonic() - t

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args, inp=b"", check=True):
        r = subprocess.run([self.bin, "--data", str(self.data), *args], input=inp, capture_output=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"posthorn {' '.join(args)} exited {r.returncode}: "
                               f"{r.stderr.decode(errors='replace')[-1000:]}")
        return r


# ---- postfix ------------------------------------------------------------------

MASTER_CF = """\
# private benchmark instance: no chroot, loopback only
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """A private Postfix that relays everything it accepts from loopback to
    relayhost (extra main.cf lines may add defer_transports etc.)."""

    def __init__(self, tmp: Path, relayhost, main_extra=""):
        pw = pwd.getpwnam("postfix")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.root = tmp / "postfix"
        self.conf = self.root / "conf"
        for d in (self.conf, self.root / "queue"):
            d.mkdir(parents=True)
        os.chmod(tmp, 0o755)
        os.chmod(self.root, 0o755)
        self.port = free_port()
        (self.conf / "master.cf").write_text(MASTER_CF.format(port=self.port))
        (self.conf / "main.cf").write_text(f"""\
# private benchmark instance (bench/pfxlib.py)
compatibility_level = 3.6
queue_directory = {self.root}/queue
data_directory = {self.root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = pfx.bench.test
mydomain = bench.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = {relayhost}
smtp_dns_support_level = disabled
maillog_file = {self.root}/maillog
maillog_file_prefixes = {self.root}
smtpd_client_connection_count_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_connection_rate_limit = 0
message_size_limit = 52428800
alias_maps =
alias_database =
notify_classes =
smtputf8_enable = yes
""" + main_extra)
        self.env = dict(os.environ, MAIL_CONFIG=str(self.conf))

    def run(self, *cmd, **kw):
        return subprocess.run(list(cmd), env=self.env, **kw)

    def start(self, timeout=120):
        t = time.monotonic()
        r = self.run("postfix", "-c", str(self.conf), "start", capture_output=True)
        if r.returncode != 0:
            ml = self.root / "maillog"
            raise RuntimeError("postfix start: " + (r.stdout + r.stderr).decode(errors="replace")[-2000:]
                               + (ml.read_text(errors="replace")[-2000:] if ml.exists() else ""))
        if not wait_port(self.port, timeout):
            raise RuntimeError("private postfix did not listen on 127.0.0.1:%d" % self.port)
        return time.monotonic() - t

    def stop(self):
        self.run("postfix", "-c", str(self.conf), "stop", capture_output=True)
        # master exits after its children
        pidf = self.root / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + 30
        while pidf.exists() and time.monotonic() < deadline:
            try:
                os.kill(int(pidf.read_text().split()[0]), 0)
            except (OSError, ValueError):
                break
            time.sleep(0.2)

    def count(self, queue):
        n = 0
        for _, _, files in os.walk(self.root / "queue" / queue):
            n += len(files)
        return n

    def maillog_tail(self):
        ml = self.root / "maillog"
        return ml.read_text(errors="replace")[-3000:] if ml.exists() else ""


def smtp_source(port, n, sessions, mail_from, rcpt, size=1024, subject=None, unique_rcpt=True, timeout=3600):
    """Postfix's load client: n messages from sessions parallel sessions."""
    cmd = [tool("smtp-source"), "-d", "-l", str(size), "-m", str(n), "-s", str(sessions), "-f", mail_from,
           "-t", rcpt, "-M", "client.bench.test"]
    if unique_rcpt:
        cmd.append("-N")
    if subject:
        cmd += ["-S", subject]
    cmd.append(f"127.0.0.1:{port}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"smtp-source exited {r.returncode}: {r.stderr.strip()[-500:]}")
