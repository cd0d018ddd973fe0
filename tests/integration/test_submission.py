"""Submission port (RFC 6409) with AUTH PLAIN / LOGIN (RFC 4954)."""
import base64
import shutil
import smtplib
import subprocess
import time

import pytest

from conftest import QUEUE_ID_RE, make_message, wait_until

PW = "Sub-Secret-456!"


def outbox_file_for(srv, qid, timeout=30):
    def find():
        for f in srv.queue_files("outbox"):
            if qid.decode() in f.name or qid in f.read_bytes()[:4096]:
                return f
        return None
    f = wait_until(find, timeout)
    assert f, f"queue id {qid!r} never reached queue/outbox\n" + srv.queue_listing() + srv.log_text()
    return f


def send_remote(s, frm, rcpt="friend@example.com"):
    assert s.mail(frm)[0] == 250
    code, msg = s.rcpt(rcpt)
    assert code == 250, (code, msg)
    code, msg = s.data(make_message(subject="to remote", frm=frm, to=rcpt))
    assert code == 250, (code, msg)
    ids = QUEUE_ID_RE.findall(msg)
    assert ids, msg
    return ids[0]


def test_auth_advertised(server):
    s = server.submission()
    assert "auth" in s.esmtp_features, s.esmtp_features
    mechs = s.esmtp_features["auth"].upper().split()
    assert "PLAIN" in mechs and "LOGIN" in mechs, mechs
    s.quit()


@pytest.mark.parametrize("mech,initial", [("PLAIN", True), ("PLAIN", False), ("LOGIN", True), ("LOGIN", False)])
def test_auth_then_send_remote_goes_to_outbox(server, mech, initial):
    user = server.add_user("alice", PW)
    s = server.submission()
    s.user, s.password = user, PW
    auth_obj = s.auth_plain if mech == "PLAIN" else s.auth_login
    code, msg = s.auth(mech, auth_obj, initial_response_ok=initial)
    assert code == 235 and msg.startswith(b"2.7.0"), (code, msg)
    qid = send_remote(s, user)
    s.quit()
    f = outbox_file_for(server, qid)
    content = f.read_bytes()
    assert b"rcpt <friend@example.com>" in content, content[:600]
    assert b"auth-user " + user.encode() in content, content[:600]


def test_submission_local_delivery(server):
    alice = server.add_user("alice", PW)
    bob = server.add_user("bob", PW)
    s = server.submission(alice, PW)
    s.sendmail(alice, [bob], make_message(subject="internal", frm=alice, to=bob))
    s.quit()
    server.wait_for_maildir("bob", 1)


def test_mail_before_auth(server):
    s = server.submission()
    code, msg = s.mail("someone@client.test")
    assert code == 530 and msg.startswith(b"5.7.0"), (code, msg)
    s.quit()


def test_wrong_password(server):
    user = server.add_user("alice", PW)
    s = server.submission()
    with pytest.raises(smtplib.SMTPAuthenticationError) as ei:
        s.user, s.password = user, "wrong-password"
        s.auth("PLAIN", s.auth_plain)
    assert ei.value.smtp_code == 535 and ei.value.smtp_error.startswith(b"5.7.8"), ei.value
    # unknown user: the same answer (no user enumeration)
    with pytest.raises(smtplib.SMTPAuthenticationError) as ei:
        s.user, s.password = "nobody@" + server.domain, "whatever"
        s.auth("LOGIN", s.auth_login)
    assert ei.value.smtp_code == 535 and ei.value.smtp_error.startswith(b"5.7.8"), ei.value
    # still not authenticated
    assert s.mail(user)[0] == 530
    s.quit()


def test_auth_on_mx_allows_relay(server):
    """AUTH on the MX port (loopback) lets the user relay too; without it: 554."""
    user = server.add_user("alice", PW)
    s = server.smtp()
    s.mail(user)
    assert s.rcpt("friend@example.com")[0] == 554
    s.rset()
    if "auth" not in s.esmtp_features:
        pytest.skip("AUTH not offered on the MX port")
    s.login(user, PW)
    qid = send_remote(s, user)
    s.quit()
    outbox_file_for(server, qid)


def test_swaks_auth_submission(server):
    if not shutil.which("swaks"):
        pytest.skip("swaks not installed")
    user = server.add_user("alice", PW)
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(server.sub_port),
                        "--helo", "client.test", "--from", user, "--to", "friend@example.org",
                        "--auth", "LOGIN", "--auth-user", user, "--auth-password", PW,
                        "--header", "Subject: swaks submission"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert wait_until(lambda: server.queue_files("outbox"), 30), server.queue_listing()


def test_auth_plain_raw_with_authzid_mismatch_rejected(server):
    """An authorization identity other than the login must not be accepted
    (no impersonation)."""
    alice = server.add_user("alice", PW)
    server.add_user("bob", PW)
    c = server.raw(server.sub_port)
    c.reply()
    c.cmd(b"EHLO client.test")
    tok = base64.b64encode(server.addr("bob").encode() + b"\0" + alice.encode() + b"\0" + PW.encode())
    code, t = c.cmd(b"AUTH PLAIN " + tok)
    assert code != 235, (code, t)
    c.close()


def test_events_name_submitter(server):
    """The event log tells which client and account submitted a message."""
    user = server.add_user("alice", PW)
    s = server.submission(user, PW)
    qid = send_remote(s, user).decode()
    s.quit()
    time.sleep(0.5)
    evs = server.events()
    queued = [e for e in evs if qid in str(e.values()) and "queued" in str(e.values())]
    assert queued, f"no 'queued' event naming {qid}: {evs[-20:]}"
    txt = str(queued[0])
    assert "127.0.0.1" in txt and user in txt, queued[0]
