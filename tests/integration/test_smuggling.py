"""SMTP smuggling: a bare CR or bare LF inside DATA must never end or split
a message. posthorn's documented behaviour: the whole message is REJECTED
with "550 5.6.0" once the real <CRLF>.<CRLF> arrives; nothing in between is
executed as a command, nothing is delivered, and the session stays usable."""
import pytest

from conftest import make_message

PW = "Secret-pass-123!"

VARIANTS = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
}


def open_data(srv, c, rcpt):
    assert c.reply()[0] == 220
    assert c.cmd(b"EHLO client.test")[0] == 250
    assert c.cmd(b"MAIL FROM:<honest@client.test>")[0] == 250
    assert c.cmd(b"RCPT TO:<" + rcpt.encode() + b">")[0] == 250
    assert c.cmd(b"DATA")[0] == 354


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_smuggling_variant_rejected(server, variant):
    srv = server
    alice = srv.add_user("alice", PW)
    victim = srv.add_user("victim", PW)
    c = srv.raw()
    open_data(srv, c, alice)
    payload = (make_message(subject="outer", to=alice, body=b"hello")
               + VARIANTS[variant]
               + b"MAIL FROM:<smuggler@evil.test>\r\n"
               + b"RCPT TO:<" + victim.encode() + b">\r\n"
               + b"DATA\r\n"
               + b"From: smuggler@evil.test\r\nTo: " + victim.encode() + b"\r\nSubject: smuggled\r\n\r\n"
               + b"smuggled body\r\n"
               + b".\r\n")
    c.send(payload)
    code, text = c.reply()
    assert code == 550 and text[0].startswith(b"5.6.0"), (code, text)
    assert c.nothing_pending(1.5), f"more replies after the 550: {c.buf!r}"
    # the session is still usable and the smuggled MAIL did not open a transaction
    assert c.cmd(b"RCPT TO:<" + victim.encode() + b">")[0] == 503
    assert c.cmd(b"NOOP")[0] == 250
    assert c.cmd(b"MAIL FROM:<honest@client.test>")[0] == 250
    assert c.cmd(b"RCPT TO:<" + alice.encode() + b">")[0] == 250
    assert c.cmd(b"DATA")[0] == 354
    c.send(make_message(subject="after-smuggling", to=alice) + b".\r\n")
    assert c.reply()[0] == 250
    assert c.cmd(b"QUIT")[0] == 221
    c.close()

    files = srv.wait_for_maildir("alice", 1)
    srv.wait_queue_empty("pending")
    files = srv.maildir_files("alice")
    assert len(files) == 1, [f.name for f in files]
    assert b"Subject: after-smuggling" in files[0].read_bytes()
    assert srv.maildir_files("victim") == [], "smuggled message was delivered"


@pytest.mark.parametrize("bare", [b"\n", b"\r"], ids=["bare-LF", "bare-CR"])
def test_bare_line_end_in_data_rejected(server, bare):
    alice = server.add_user("alice", PW)
    c = server.raw()
    open_data(server, c, alice)
    c.send(make_message(subject="bare", body=b"one" + bare + b"two\r\n") + b".\r\n")
    code, text = c.reply()
    assert code == 550 and text[0].startswith(b"5.6.0"), (code, text)
    assert c.cmd(b"NOOP")[0] == 250
    c.close()
    server.wait_queue_empty("pending")
    assert server.maildir_files("alice") == []
