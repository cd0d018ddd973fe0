"""Local delivery: plus-addressing, aliases, case-insensitivity, quota."""
import time

from conftest import make_message, unfold_headers, wait_until

PW = "Deliver-pw-321!"


def send(srv, rcpts, subject="t", frm="s@client.test", port=None):
    s = srv.smtp()
    refused = s.sendmail(frm, rcpts, make_message(subject=subject, frm=frm))
    s.quit()
    return refused


def test_plus_addressing(server):
    alice = server.add_user("alice", PW)
    local, dom = alice.split("@")
    send(server, [f"{local}+news@{dom}"], subject="plus")
    f = server.wait_for_maildir("alice", 1)[0]
    stored = f.read_bytes()
    assert b"Subject: plus" in stored
    assert not (server.data / "mail" / dom / f"{local}+news").exists()


def test_case_insensitive_domain_and_local_part(server):
    alice = server.add_user("alice", PW)
    local, dom = alice.split("@")
    send(server, [f"{local.upper()}@{dom.upper()}"], subject="upper")
    send(server, [f"AlIcE@{dom.swapcase()}"], subject="mixed")
    files = server.wait_for_maildir("alice", 2)
    assert len(files) == 2


def test_user_add_case_insensitive(server):
    """ALICE@DOMAIN and alice@domain are one user."""
    server.add_user("alice", PW)
    r = server.cli("user", "add", "ALICE@" + server.domain.upper(), "--password-stdin", input=b"Other-pw-999!\n")
    assert r.returncode != 0, "second user differing only in case was accepted"


def test_alias_one_to_many(server):
    alice = server.add_user("alice", PW)
    bob = server.add_user("bob", PW)
    team = "team@" + server.domain
    server.cli("alias", "add", team, alice, check=True)
    server.cli("alias", "add", team, bob, check=True)
    server.cli("alias", "add", team, "partner@example.com", check=True)
    r = server.cli("alias", "list", check=True)
    assert team.encode() in r.stdout and bob.encode() in r.stdout, r.stdout
    send(server, [team], subject="to the team")
    server.wait_for_maildir("alice", 1)
    server.wait_for_maildir("bob", 1)
    assert wait_until(lambda: server.queue_files("outbox"), 30), (
        "remote alias target did not reach outbox\n" + server.queue_listing())
    out = server.queue_files("outbox")[0].read_bytes()
    assert b"rcpt <partner@example.com>" in out
    server.wait_queue_empty("pending")
    time.sleep(0.5)
    assert len(server.maildir_files("alice")) == 1
    assert len(server.maildir_files("bob")) == 1


def test_alias_and_direct_recipient_delivered_once(server):
    alice = server.add_user("alice", PW)
    team = "team@" + server.domain
    server.cli("alias", "add", team, alice, check=True)
    send(server, [team, alice], subject="dup")
    server.wait_for_maildir("alice", 1)
    server.wait_queue_empty("pending")
    time.sleep(1)
    assert len(server.maildir_files("alice")) == 1


def test_alias_loop_is_safe(server):
    alice = server.add_user("alice", PW)
    a = "loop-a@" + server.domain
    b = "loop-b@" + server.domain
    server.cli("alias", "add", a, b, check=True)
    server.cli("alias", "add", b, a, check=True)
    server.cli("alias", "add", b, alice, check=True)
    send(server, [a], subject="loop")
    server.wait_for_maildir("alice", 1)
    server.wait_queue_empty("pending")
    time.sleep(1)
    assert len(server.maildir_files("alice")) == 1
    assert server.alive()


def test_quota_452_at_rcpt(server):
    q = server.add_user("quser", PW, quota="10K")
    body = ("q" * 70 + "\r\n") * 55  # ~4 KB
    got = None
    for i in range(8):
        s = server.smtp()
        s.mail("s@client.test")
        code, msg = s.rcpt(q)
        if code != 250:
            got = (i, code, msg)
            s.quit()
            break
        code, msg = s.data(make_message(subject=f"quota {i}", body=body))
        assert code == 250, (i, code, msg)
        s.quit()
        server.wait_for_maildir("quser", i + 1)
    assert got is not None, "quota never enforced after 8 x 4 KB into a 10 KB mailbox"
    i, code, msg = got
    assert code == 452 and msg.startswith(b"4.2.2"), got
    assert 2 <= i <= 4, f"refused after {i} messages of ~4 KB with a 10 KB quota"


def test_return_path_and_delivered_to(server):
    alice = server.add_user("alice", PW)
    local, dom = alice.split("@")
    send(server, [f"{local}+tag@{dom}"], frm="origin@client.test")
    stored = server.wait_for_maildir("alice", 1)[0].read_bytes()
    assert stored.startswith(b"Return-Path: <origin@client.test>\r\n"), stored[:200]
    h = unfold_headers(stored)
    assert any(k == "delivered-to" for k, _ in h)


def test_maildir_layout(server):
    server.add_user("alice", PW)
    send(server, [server.addr("alice")])
    files = server.wait_for_maildir("alice", 1)
    md = server.maildir("alice")
    for sub in ("cur", "new", "tmp"):
        assert (md / sub).is_dir()
    assert files[0].parent.name == "new"
    assert ",S=" in files[0].name
    size = int(files[0].name.split(",S=")[1].split(":")[0].split(",")[0])
    assert size == files[0].stat().st_size
