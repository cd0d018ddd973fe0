"""The console sub-commands and sendmail(1) compatibility."""
import json
import os
import shutil

import pytest


from conftest import make_message, unfold_headers, wait_until

PW = "Cli-pw-111!"


def test_first_start_prints_postmaster_password(server):
    pw = server.postmaster_password
    assert len(pw) >= 12, f"postmaster password {pw!r} is not strong"
    p = server.pop3("postmaster", pw)
    p.stat()
    p.quit()
    # printed once: a restart does not print it again
    server.restart()
    log = server.log_path.read_text(errors="replace")
    second = log.split("===== start #2 =====", 1)[1]
    assert pw not in second, "postmaster password printed again on the second start"


def test_embedded_defaults_without_config(make_server):
    """No posthorn.conf: the server writes a commented default one and
    listens on 127.0.0.1:2525/2587/2110. Run in a private network namespace
    so the default ports cannot collide with anything on this machine."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private network namespace")
    srv = make_server(start=False)
    (srv.data / "posthorn.conf").unlink()
    srv.start(wait=False, wrap=("unshare", "-n"))
    ok = wait_until(lambda: b"ready" in srv.log_path.read_bytes() or not srv.alive(), 60)
    assert ok and srv.alive(), "serve did not come up on the embedded defaults\n" + srv.log_text()
    srv.stop()  # SIGTERM, exit 0
    log = srv.log_path.read_text(errors="replace")
    for port in (2525, 2587, 2110):
        assert f"127.0.0.1:{port}" in log, f"does not say it listens on 127.0.0.1:{port}\n{log}"
    conf = srv.data / "posthorn.conf"
    assert conf.exists()
    text = conf.read_text()
    for key in ("smtp_listen", "submission_listen", "pop3_listen", "max_message_size"):
        assert key in text
    assert all(l.startswith("#") or not l.strip() for l in text.splitlines()), \
        "the default config should be all comments (defaults are embedded)"
    # the commented file is a valid config: a second start reads it
    srv.start(wait=False, wrap=("unshare", "-n"))
    assert wait_until(lambda: srv.log_path.read_bytes().count(b"ready") >= 2 or not srv.alive(), 60)
    assert srv.alive(), srv.log_text()
    srv.stop()


def test_domain_list_json(server):
    r = server.cli("domain", "list", "--json", check=True)
    j = json.loads(r.stdout)
    assert server.domain in json.dumps(j)


def test_user_add_list_passwd_del(server):
    a = server.add_user("alice", PW)
    r = server.cli("user", "list", check=True)
    assert a.encode() in r.stdout
    server.cli("user", "passwd", a, "--password-stdin", input=b"New-pw-222!\n", check=True)
    p = server.pop3("alice", "New-pw-222!")
    p.quit()
    server.cli("user", "del", a, check=True)
    r = server.cli("user", "list", check=True)
    assert a.encode() not in r.stdout
    s = server.smtp()
    s.mail("x@client.test")
    assert s.rcpt(a)[0] == 550
    s.quit()


def test_password_not_accepted_as_argument_only(server):
    """The password comes from stdin; it never appears in the stored db in
    clear."""
    a = server.add_user("alice", "Very-unique-pw-42!")
    db = server.data / "db" / "directory.sqlite"
    blob = db.read_bytes()
    for extra in ("-wal",):
        w = db.with_name(db.name + extra)
        if w.exists():
            blob += w.read_bytes()
    assert b"Very-unique-pw-42!" not in blob
    assert a


def test_cli_malformed_address(server):
    before = server.cli("user", "list", check=True).stdout
    for bad in ("not-an-address", "a@@b", "@" + server.domain, "a b@" + server.domain):
        r = server.cli("user", "add", bad, "--password-stdin", input=b"Pw-12345678!\n")
        assert r.returncode != 0, f"user add {bad!r} succeeded"
        assert r.stderr.strip(), f"user add {bad!r}: no message on stderr"
    assert server.cli("user", "list", check=True).stdout == before


def test_cli_duplicate_user(server):
    a = server.add_user("alice", PW)
    before = server.cli("user", "list", check=True).stdout
    r = server.cli("user", "add", a, "--password-stdin", input=b"Another-pw-333!\n")
    assert r.returncode != 0
    assert r.stderr.strip()
    assert server.cli("user", "list", check=True).stdout == before
    # the old password still works: nothing changed
    p = server.pop3("alice", PW)
    p.quit()


def test_cli_unknown_domain(server):
    before_u = server.cli("user", "list", check=True).stdout
    before_d = server.cli("domain", "list", check=True).stdout
    r = server.cli("user", "add", "bob@unknown-domain.example", "--password-stdin", input=b"Pw-12345678!\n")
    assert r.returncode != 0
    assert r.stderr.strip()
    assert server.cli("user", "list", check=True).stdout == before_u
    assert server.cli("domain", "list", check=True).stdout == before_d


def test_cli_domain_add_then_user(server):
    server.cli("domain", "add", "second.example", check=True)
    r = server.cli("domain", "list", check=True)
    assert b"second.example" in r.stdout
    server.add_user("bob@second.example", PW)
    s = server.smtp()
    s.sendmail("x@client.test", ["bob@second.example"], make_message(subject="second domain"))
    s.quit()
    server.wait_for_maildir("bob@second.example", 1)
    r = server.cli("domain", "add", "bad..domain")
    assert r.returncode != 0


def test_cli_works_while_stopped(make_server):
    srv = make_server()
    srv.domain  # read while running
    srv.stop()
    a = srv.add_user("offline", PW)
    assert a.encode() in srv.cli("user", "list", check=True).stdout
    srv.start()
    p = srv.pop3("offline", PW)
    p.quit()


def test_sendmail_t(server):
    alice = server.add_user("alice", PW)
    bob = server.add_user("bob", PW)
    msg = f"From: cron@client.test\nTo: {alice}\nBcc: {bob}\nSubject: from cron\n\nbody line\n".encode()
    r = server.cli("sendmail", "-t", input=msg)
    assert r.returncode == 0, r.stderr
    fa = server.wait_for_maildir("alice", 1)[0].read_bytes()
    fb = server.wait_for_maildir("bob", 1)[0].read_bytes()
    for stored in (fa, fb):
        assert stored.endswith(b"Subject: from cron\r\n\r\nbody line\r\n"), stored
        assert not any(k == "bcc" for k, _ in unfold_headers(stored))


def test_sendmail_f_and_recipient_args(server):
    alice = server.add_user("alice", PW)
    msg = b"Subject: with -f\n\nhello\n"
    r = server.cli("sendmail", "-f", "a@b.example", alice, input=msg)
    assert r.returncode == 0, r.stderr
    stored = server.wait_for_maildir("alice", 1)[0].read_bytes()
    rp = [v for k, v in unfold_headers(stored) if k == "return-path"]
    assert rp == [b"<a@b.example>"], rp
    assert b"hello\r\n" in stored


def test_sendmail_dot_line(server):
    """Without -i a line with a single dot ends the message; with -i it is
    kept."""
    alice = server.add_user("alice", PW)
    r = server.cli("sendmail", "-i", alice, input=b"Subject: dash-i\n\nbefore\n.\nafter\n")
    assert r.returncode == 0, r.stderr
    stored = server.wait_for_maildir("alice", 1)[0].read_bytes()
    assert stored.endswith(b"before\r\n.\r\nafter\r\n"), stored
    r = server.cli("sendmail", alice, input=b"Subject: no-i\n\nbefore\n.\nafter\n")
    assert r.returncode == 0, r.stderr
    files = server.wait_for_maildir("alice", 2)
    noi = [f.read_bytes() for f in files if b"Subject: no-i" in f.read_bytes()][0]
    assert noi.endswith(b"before\r\n"), noi


def test_sendmail_via_symlink(server):
    alice = server.add_user("alice", PW)
    link = server.root / "sendmail"
    os.symlink(server.bin, link)
    r = server.cli("-oi", alice, prog=str(link), input=b"Subject: via symlink\n\nx\n",
                   env_extra={"POSTHORN_DATA": str(server.data)})
    assert r.returncode == 0, r.stderr
    server.wait_for_maildir("alice", 1)


def test_sendmail_no_recipients_fails(server):
    r = server.cli("sendmail", input=b"Subject: nobody\n\nx\n")
    assert r.returncode != 0
    assert r.stderr.strip()


def test_queue_and_status_commands(server):
    r = server.cli("status")
    assert r.returncode == 0, r.stderr
    r = server.cli("queue", "count")
    assert r.returncode == 0, r.stderr
    r = server.cli("queue", "list")
    assert r.returncode == 0, r.stderr
    a = server.add_user("alice", PW)
    s = server.submission(a, PW)
    s.sendmail(a, ["friend@example.com"], make_message(subject="for queue list"))
    s.quit()
    assert wait_until(lambda: server.queue_files("outbox"), 30)
    qid = server.queue_files("outbox")[0].name
    r = server.cli("queue", "list")
    assert r.returncode == 0 and qid.encode() in r.stdout, r.stdout
    r = server.cli("queue", "show", qid)
    assert r.returncode == 0 and b"friend@example.com" in r.stdout, r.stdout


def test_unknown_subcommand(server):
    r = server.cli("frobnicate")
    assert r.returncode != 0
