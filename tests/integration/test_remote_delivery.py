"""Remote delivery (issue 3): queue/outbox → DNS (a real unbound on loopback)
→ SMTP to scripted sinks or a second posthorn.

Every test builds its own little Internet with the mailnet fixture: MX / A /
AAAA / null-MX records in a private unbound, sinks on 127.0.0.x sharing
one port (posthorn's relay_port) so MX preference decides who gets the
mail. posthorn sends for authenticated users (submission) and, where a test
needs a remote or null sender, for relay_networks = 127.0.0.0/8 on its MX
port.
"""
import email
import email.policy
import json
import os
import re
import time

import pytest

from conftest import QUEUE_ID_RE, DELIVERY_TIMEOUT, ev_type, make_message, split_trace, wait_until
from mailnet import DROP, STALL, ipv6_loopback_ok, new_queue_id, write_queue_file

PW = "Remote-pw-4711!"
SHORT = {"retry_schedule": "1s", "smtp_client_timeout": "20s"}


# ---- helpers -------------------------------------------------------------------

def mta_server(make_server, net, extra="", start=True, name=None, **conf):
    """A posthorn whose MTA uses net's DNS and relay port."""
    if net.dns.proc is None:
        net.dns.start()
    return make_server(net.conf_lines(**conf) + extra, start=start, name=name)


def submit(srv, user, password, rcpts, msg, mail_opts=()):
    """Authenticated submission; returns the queue id from the 250 reply."""
    s = srv.submission(user, password)
    try:
        code, resp = s.mail(srv.addr(user), list(mail_opts))
        assert code == 250, (code, resp)
        for r in rcpts:
            code, resp = s.rcpt(r)
            assert code == 250, (r, code, resp)
        code, resp = s.data(msg)
        assert code == 250, (code, resp)
    finally:
        s.quit()
    m = QUEUE_ID_RE.search(resp)
    assert m, f"no queue id in the reply to DATA: {resp!r}"
    return m.group(0).decode()


def relay_mx(srv, mail_from, rcpts, msg):
    """Unauthenticated SMTP on the MX port (server has relay_networks =
    127.0.0.0/8); mail_from may be "" (the null sender)."""
    s = srv.smtp()
    try:
        code, resp = s.mail(f"<{mail_from}>" if mail_from == "" else mail_from)
        assert code == 250, (code, resp)
        for r in rcpts:
            code, resp = s.rcpt(r)
            assert code == 250, (r, code, resp)
        code, resp = s.data(msg)
        assert code == 250, (code, resp)
    finally:
        s.quit()
    return QUEUE_ID_RE.search(resp).group(0).decode()


def outbox_messages(srv):
    return [p for p in srv.queue_files("outbox") if QUEUE_ID_RE.fullmatch(p.name.encode())]


def wait_outbox_empty(srv, net, timeout=DELIVERY_TIMEOUT):
    ok = wait_until(lambda: not srv.queue_files("outbox"), timeout)
    assert ok, (f"queue/outbox still holds {[p.name for p in srv.queue_files('outbox')]} after {timeout}s\n"
                + net.describe() + srv.log_text())


def wait_sink(sink, n, net, srv, timeout=DELIVERY_TIMEOUT, rcpt=None):
    got = sink.wait_delivered(n, timeout, rcpt=rcpt)
    assert got >= n, (f"{sink.name}: {got} deliveries{' to ' + rcpt if rcpt else ''} after {timeout}s, want {n}\n"
                      + net.describe() + srv.queue_listing() + srv.log_text())


def wait_mail(srv, user, n, net, timeout=DELIVERY_TIMEOUT):
    ok = wait_until(lambda: len(srv.maildir_files(user)) >= n, timeout)
    assert ok, (f"{srv.addr(user)}: {len(srv.maildir_files(user))} messages after {timeout}s, want {n}\n"
                + net.describe() + srv.queue_listing() + srv.log_text())
    return srv.maildir_files(user)


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def check_dsn(raw: bytes, rcpt, action="failed", status=r"5\.\d{1,3}\.\d{1,3}", diag=None, subject=None):
    """Checks an RFC 3464 / RFC 6522 report as stored in the sender's
    mailbox and returns the recipient's status block."""
    m = parse(raw)
    rp = m.get_all("Return-Path") or []
    assert rp and rp[0].strip() == "<>", f"a DSN is sent from the null sender: Return-Path {rp!r}\n{raw[:1500]!r}"
    assert m.get_content_type() == "multipart/report", f"content type {m.get_content_type()}\n{raw[:1500]!r}"
    assert (m.get_param("report-type") or "").lower() == "delivery-status", m.get("Content-Type")
    parts = m.get_payload()
    assert isinstance(parts, list) and len(parts) >= 2, f"report has {len(parts) if isinstance(parts, list) else 0} parts"
    assert parts[0].get_content_maintype() == "text", f"first part (human readable) is {parts[0].get_content_type()}"
    ds = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    assert len(ds) == 1, f"parts: {[p.get_content_type() for p in parts]}"
    blocks = ds[0].get_payload()
    assert isinstance(blocks, list) and len(blocks) >= 2, f"delivery-status blocks: {blocks!r}"
    assert blocks[0]["Reporting-MTA"], f"per-message fields lack Reporting-MTA: {blocks[0].items()}"
    mine = [b for b in blocks[1:] if rcpt.lower() in (b["Final-Recipient"] or "").lower()]
    assert len(mine) == 1, f"want one block for {rcpt}; blocks: {[b.items() for b in blocks[1:]]}"
    b = mine[0]
    fr = b["Final-Recipient"].strip()
    assert re.fullmatch(r"(?i)rfc822;\s*" + re.escape(rcpt), fr), f"Final-Recipient: {fr!r}"
    assert b["Action"].strip().lower() == action, f"Action: {b['Action']!r}, want {action}"
    assert re.fullmatch(status, b["Status"].strip()), f"Status: {b['Status']!r}, want /{status}/"
    if diag is not None:
        dc = " ".join((b["Diagnostic-Code"] or "").split())
        assert re.match(r"(?i)smtp;", dc), f"Diagnostic-Code is not an smtp one: {dc!r}"
        assert diag in dc, f"Diagnostic-Code {dc!r} does not carry the remote reply {diag!r}"
    if subject is not None:
        hdr = [p for p in parts if p.get_content_type() in ("text/rfc822-headers", "message/rfc822")]
        assert hdr, f"no original headers part: {[p.get_content_type() for p in parts]}"
        assert hdr[0].get_content_type() == "text/rfc822-headers", (
            f"the original headers go in text/rfc822-headers, got {hdr[0].get_content_type()}")
        text = hdr[0].get_payload(decode=True) or b""
        assert f"Subject: {subject}".encode() in text, f"original Subject missing from {text[:800]!r}"
    return b


def attempt_events(srv, qid, rcpt=None):
    """The event log's delivery attempts of one message on the wire:
    "delivery" events naming the queue id (and the recipient) with the
    remote host's address."""
    out = []
    for e in srv.events():
        if ev_type(e) != "delivery" or e.get("id") != qid:
            continue
        if rcpt and (e.get("rcpt") or "").lower() != rcpt.lower():
            continue
        if e.get("ip"):
            out.append(e)
    return out


def zone_two_mx(net, domain, first_ip, second_ip, first_pref=10, second_pref=20):
    # declared in reverse order: preference, not record order, decides
    net.dns.mx(domain, (second_pref, f"mx2.{domain}"), (first_pref, f"mx1.{domain}"))
    net.dns.a(f"mx1.{domain}", first_ip).a(f"mx2.{domain}", second_ip)


# ---- delivered -----------------------------------------------------------------------

def test_delivered_to_the_preferred_mx(make_server, mailnet):
    zone_two_mx(mailnet, "example.test", "127.0.0.2", "127.0.0.3")
    best = mailnet.sink("127.0.0.2", name="mx1")
    other = mailnet.sink("127.0.0.3", name="mx2")
    srv = mta_server(make_server, mailnet)
    srv.add_user("alice", PW)
    sent = {}
    for i in range(3):
        msg = make_message(subject=f"hello {i}", frm=srv.addr("alice"), to=f"bob{i}@example.test",
                           body=f"line one\r\n.leading dot\r\nmessage {i}\r\n", msgid=f"m{i}@client.test")
        qid = submit(srv, "alice", PW, [f"bob{i}@example.test"], msg)
        sent[f"bob{i}@example.test"] = (qid, msg)
    wait_sink(best, 3, mailnet, srv)
    wait_outbox_empty(srv, mailnet)
    assert other.transactions() == [], "the MX with the higher preference value was used\n" + mailnet.describe()
    got = {r: d for r, d in best.delivered_rcpts()}
    assert sorted(got) == sorted(sent)
    for t in best.completed():
        assert t.mail_from == srv.addr("alice")
        rcpt = t.delivered[0]
        # the bytes that left are the bytes submitted, below our trace fields
        names = split_trace(t.data, sent[rcpt][1])
        # our Received: on top, no Return-Path: (RFC 5321 4.4)
        assert names and set(names) == {"received"}, names
    assert best.violations() == []


def test_delivered_to_a_second_posthorn(make_server, mailnet):
    """posthorn to posthorn: the remote MX is a second server with a local
    user; an 8-bit message arrives intact (both sides speak 8BITMIME)."""
    mailnet.dns.mx("b.test", (10, "mx.b.test")).a("mx.b.test", "127.0.0.6")
    mailnet.dns.start()
    remote = make_server(f"smtp_listen = 127.0.0.6:{mailnet.relay_port}\nhostname = mx.b.test\n"
                         + mailnet.conf_lines(**SHORT), name="remote")
    remote.cli("domain", "add", "b.test", check=True)
    remote.add_user("bob@b.test", "Remote-bob-pw-1!")
    srv = mta_server(make_server, mailnet, name="origin", **SHORT)
    alice = srv.add_user("alice", PW)
    text = "Grüße, Bob — 8 bit.\r\n"
    msg = make_message(subject="to the other side", frm=alice, to="bob@b.test", body=text.encode("utf-8"),
                       extra_headers=["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                                      "Content-Transfer-Encoding: 8bit"])
    submit(srv, "alice", PW, ["bob@b.test"], msg, mail_opts=["BODY=8BITMIME"])
    files = wait_mail(remote, "bob@b.test", 1, mailnet)
    wait_outbox_empty(srv, mailnet)
    stored = files[0].read_bytes()
    names = split_trace(stored, msg)
    assert names.count("received") == 2 and "return-path" in names, names
    assert (f"Return-Path: <{alice}>").encode() in stored
    assert srv.maildir_files("alice") == []


def test_a_record_when_there_is_no_mx(make_server, mailnet):
    mailnet.dns.a("nomx.test", "127.0.0.4")
    sink = mailnet.sink("127.0.0.4")
    srv = mta_server(make_server, mailnet)
    srv.add_user("alice", PW)
    submit(srv, "alice", PW, ["carol@nomx.test"], make_message(subject="implicit mx", to="carol@nomx.test"))
    wait_sink(sink, 1, mailnet, srv)
    assert sink.delivered_rcpts()[0][0] == "carol@nomx.test"
    wait_outbox_empty(srv, mailnet)


@pytest.mark.skipif(not ipv6_loopback_ok(), reason="no IPv6 loopback on this machine")
def test_ipv6_only_mx(make_server, mailnet):
    mailnet.dns.mx("six.test", (10, "mx.six.test")).aaaa("mx.six.test", "::1")
    sink = mailnet.sink("::1")
    srv = mta_server(make_server, mailnet)
    srv.add_user("alice", PW)
    submit(srv, "alice", PW, ["dave@six.test"], make_message(subject="over v6", to="dave@six.test"))
    wait_sink(sink, 1, mailnet, srv)
    wait_outbox_empty(srv, mailnet)


def test_file_dropped_in_pending_is_routed_and_sent(make_server, mailnet):
    """The classic manual procedure: an .eml dropped into queue/pending
    goes out like any other message."""
    mailnet.dns.mx("drop.test", (10, "mx.drop.test")).a("mx.drop.test", "127.0.0.2")
    sink = mailnet.sink("127.0.0.2")
    srv = mta_server(make_server, mailnet)
    srv.drop_pending("manual.eml", make_message(subject="dropped by hand", frm="ops@client.test",
                                                to="erin@drop.test"))
    wait_sink(sink, 1, mailnet, srv)
    assert sink.delivered_rcpts()[0][0] == "erin@drop.test"
    assert b"Subject: dropped by hand" in sink.delivered_rcpts()[0][1]


# ---- temporary failures and retries ---------------------------------------------------

def test_4xx_then_success_on_retry(make_server, mailnet):
    mailnet.dns.mx("retry.test", (10, "mx.retry.test")).a("mx.retry.test", "127.0.0.2")
    sink = mailnet.sink("127.0.0.2").script_rcpt("frank@retry.test", (451, "4.7.1 greylisted, come back later"), 250)
    srv = mta_server(make_server, mailnet, **SHORT)
    srv.add_user("alice", PW)
    qid = submit(srv, "alice", PW, ["frank@retry.test"], make_message(subject="grey", to="frank@retry.test"))
    wait_sink(sink, 1, mailnet, srv)
    wait_outbox_empty(srv, mailnet)
    assert sink.rcpt_attempts["frank@retry.test"] == 2, mailnet.describe()
    assert sink.delivered_count("frank@retry.test") == 1
    assert srv.maildir_files("alice") == [], "a temporary failure must not bounce"
    # one event per attempt: the 451 and the 250
    wait_until(lambda: len(attempt_events(srv, qid, "frank@retry.test")) >= 2, 10)
    evs = attempt_events(srv, qid, "frank@retry.test")
    assert len(evs) == 2, f"want 2 attempt events for {qid}, got {json.dumps(evs, indent=1)}"
    for e, code in zip(evs, ("451 4.7.1 greylisted", "250 ")):
        assert e.get("host") == "mx.retry.test" and e.get("ip") == "127.0.0.2", e
        assert (e.get("reply") or "").startswith(code), e
        assert isinstance(e.get("delay_ms"), int), e
    assert evs[0].get("status") == "deferred" and evs[1].get("status") == "sent", evs


def test_queue_retry_forgets_the_backoff(make_server, mailnet):
    """A long back-off; `posthorn queue retry ID` delivers at once."""
    mailnet.dns.mx("later.test", (10, "mx.later.test")).a("mx.later.test", "127.0.0.2")
    sink = mailnet.sink("127.0.0.2").script_rcpt("gina@later.test", 451, 250)
    srv = mta_server(make_server, mailnet, retry_schedule="1h", smtp_client_timeout="20s")
    srv.add_user("alice", PW)
    qid = submit(srv, "alice", PW, ["gina@later.test"], make_message(subject="retry me", to="gina@later.test"))
    assert wait_until(lambda: sink.rcpt_attempts.get("gina@later.test", 0) >= 1, DELIVERY_TIMEOUT), mailnet.describe()
    # the outcome of the first attempt is saved beside the message
    st = srv.queue_dir("outbox") / f"{qid}.st"
    assert wait_until(lambda: st.exists() and b"deferred" in st.read_bytes(), 10), (
        f"no deferred state in {st}\n" + srv.queue_listing())
    time.sleep(1.5)
    assert sink.delivered_count() == 0
    r = srv.cli("queue", "show", qid, check=True)
    assert b"451" in r.stdout, f"queue show does not tell the last reply:\n{r.stdout.decode()}"
    srv.cli("queue", "retry", qid, check=True)
    wait_sink(sink, 1, mailnet, srv, timeout=15)
    wait_outbox_empty(srv, mailnet)
    assert sink.delivered_count() == 1


def test_retry_takes_a_new_route(make_server, mailnet):
    """The MX moved after a failed attempt: `queue retry` forgets the old
    route and delivers to the new host at once."""
    mailnet.dns.mx("moved.test", (10, "old.moved.test")).a("old.moved.test", "127.0.0.2")
    mailnet.dns.a("new.moved.test", "127.0.0.3")
    old = mailnet.sink("127.0.0.2", name="old").script_all_rcpts((421, "4.3.2 closing down for good"))
    new = mailnet.sink("127.0.0.3", name="new")
    srv = mta_server(make_server, mailnet, retry_schedule="1h", smtp_client_timeout="20s")
    srv.add_user("alice", PW)
    qid = submit(srv, "alice", PW, ["max@moved.test"], make_message(subject="moving", to="max@moved.test"))
    assert wait_until(lambda: attempt_events(srv, qid), DELIVERY_TIMEOUT), mailnet.describe() + srv.log_text()
    mailnet.dns.records = [r for r in mailnet.dns.records if r[0] != "moved.test."]
    mailnet.dns.mx("moved.test", (10, "new.moved.test"))
    mailnet.dns.restart()
    time.sleep(2)  # the records had a TTL of 1 s
    srv.cli("queue", "retry", qid, check=True)
    wait_sink(new, 1, mailnet, srv, timeout=15)
    wait_outbox_empty(srv, mailnet)
    assert old.completed() == []


@pytest.mark.parametrize("how", ["greeting-421", "no-listener", "rcpt-451", "dropped"])
def test_first_mx_refuses_second_accepts(make_server, mailnet, how):
    zone_two_mx(mailnet, "two.test", "127.0.0.2", "127.0.0.3")
    if how == "greeting-421":
        first = mailnet.sink("127.0.0.2", banner=[421])
    elif how == "rcpt-451":
        first = mailnet.sink("127.0.0.2").script_all_rcpts(451)
    elif how == "dropped":
        first = mailnet.sink("127.0.0.2").script_mail(DROP)
    else:
        first = None  # nothing listens on 127.0.0.2: connection refused
    second = mailnet.sink("127.0.0.3", name="mx2")
    srv = mta_server(make_server, mailnet, retry_schedule="1h", smtp_client_timeout="20s")
    srv.add_user("alice", PW)
    submit(srv, "alice", PW, ["hank@two.test"], make_message(subject=f"backup mx {how}", to="hank@two.test"))
    wait_sink(second, 1, mailnet, srv)
    wait_outbox_empty(srv, mailnet)
    if first is not None:
        assert first.completed() == [] and len(first.connections) >= 1, mailnet.describe()
    time.sleep(1)
    assert second.delivered_count() == 1
    assert srv.maildir_files("alice") == []


def test_partial_delivery_retries_only_the_failed_recipient(make_server, mailnet):
    mailnet.dns.mx("part.test", (10, "mx.part.test")).a("mx.part.test", "127.0.0.2")
    mailnet.dns.mx("other.test", (10, "mx.other.test")).a("mx.other.test", "127.0.0.3")
    sink = mailnet.sink("127.0.0.2").script_rcpt("late@part.test", 451, 451, 250)
    sink2 = mailnet.sink("127.0.0.3")
    srv = mta_server(make_server, mailnet, **SHORT)
    srv.add_user("alice", PW)
    rcpts = ["ok@part.test", "late@part.test", "elsewhere@other.test"]
    submit(srv, "alice", PW, rcpts, make_message(subject="three", to=", ".join(rcpts)))
    wait_sink(sink, 1, mailnet, srv, rcpt="late@part.test")
    wait_outbox_empty(srv, mailnet)
    time.sleep(1)
    assert sink.delivered_count("ok@part.test") == 1, mailnet.describe()
    assert sink.delivered_count("late@part.test") == 1, mailnet.describe()
    assert sink2.delivered_count("elsewhere@other.test") == 1, mailnet.describe()
    # the delivered recipient is not even offered again
    assert sink.rcpt_attempts["ok@part.test"] == 1, mailnet.describe()
    assert sink.rcpt_attempts["late@part.test"] == 3
    assert sink2.rcpt_attempts["elsewhere@other.test"] == 1
    assert srv.maildir_files("alice") == []


# ---- bounces --------------------------------------------------------------------------------

def test_5xx_bounces_to_the_sender_with_a_dsn(make_server, mailnet):
    mailnet.dns.mx("strict.test", (10, "mx.strict.test")).a("mx.strict.test", "127.0.0.2")
    reply = "5.1.1 <ivan@strict.test>: no such mailbox (sink-marker-Q7)"
    sink = mailnet.sink("127.0.0.2").script_rcpt("ivan@strict.test", (550, reply))
    srv = mta_server(make_server, mailnet, **SHORT)
    alice = srv.add_user("alice", PW)
    qid = submit(srv, "alice", PW, ["ivan@strict.test"],
                 make_message(subject="Quarterly figures", frm=alice, to="ivan@strict.test"))
    files = wait_mail(srv, "alice", 1, mailnet)
    wait_outbox_empty(srv, mailnet)
    raw = files[0].read_bytes()
    check_dsn(raw, "ivan@strict.test", action="failed", status=r"5\.1\.1", diag=f"550 {reply}",
              subject="Quarterly figures")
    m = parse(raw)
    assert alice.lower() in (m["To"] or "").lower(), f"DSN To: {m['To']!r}"
    assert m["From"], "DSN has no From:"
    # a permanent failure is not retried
    time.sleep(2)
    assert sink.rcpt_attempts["ivan@strict.test"] == 1, mailnet.describe()
    assert len(srv.maildir_files("alice")) == 1, "more than one bounce"
    fails = attempt_events(srv, qid, "ivan@strict.test")
    assert len(fails) == 1 and "550" in json.dumps(fails[0]), fails


def test_null_mx_bounces_at_once(make_server, mailnet):
    """RFC 7505: "MX 0 ." means the domain takes no mail: bounce with
    5.1.10 without waiting for any retry and without connecting anywhere."""
    mailnet.dns.null_mx("nomail.test")
    watch = mailnet.sink("127.0.0.2")  # nothing should ever connect anywhere
    srv = mta_server(make_server, mailnet, retry_schedule="1h", smtp_client_timeout="20s")
    alice = srv.add_user("alice", PW)
    submit(srv, "alice", PW, ["judy@nomail.test"], make_message(subject="to a null mx", frm=alice,
                                                                to="judy@nomail.test"))
    files = wait_mail(srv, "alice", 1, mailnet, timeout=15)
    wait_outbox_empty(srv, mailnet)
    check_dsn(files[0].read_bytes(), "judy@nomail.test", action="failed", status=r"5\.1\.10",
              subject="to a null mx")
    assert watch.connections == []


def test_expired_message_bounces(make_server, mailnet):
    mailnet.dns.mx("slow.test", (10, "mx.slow.test")).a("mx.slow.test", "127.0.0.2")
    sink = mailnet.sink("127.0.0.2").script_all_rcpts((451, "4.3.0 still busy (sink-marker-EXP)"))
    srv = mta_server(make_server, mailnet, retry_schedule="1s", max_queue_lifetime="2s",
                     smtp_client_timeout="20s")
    alice = srv.add_user("alice", PW)
    submit(srv, "alice", PW, ["ken@slow.test"], make_message(subject="too late", frm=alice, to="ken@slow.test"))
    files = wait_mail(srv, "alice", 1, mailnet, timeout=30)
    wait_outbox_empty(srv, mailnet)
    check_dsn(files[0].read_bytes(), "ken@slow.test", action="failed", status=r"[45]\.\d{1,3}\.\d{1,3}",
              diag="sink-marker-EXP", subject="too late")
    dsn = files[0].read_bytes()
    assert b"expired after" in dsn and b"after 0 hours" not in dsn, "the expiry must say how long, in a sane unit"
    n = sink.rcpt_attempts["ken@slow.test"]
    assert n >= 1
    time.sleep(2.5)
    assert sink.rcpt_attempts["ken@slow.test"] == n, "attempts went on after the bounce"
    assert len(srv.maildir_files("alice")) == 1


def test_delay_warning_then_delivery(make_server, mailnet):
    mailnet.dns.mx("wait.test", (10, "mx.wait.test")).a("mx.wait.test", "127.0.0.2")
    sink = mailnet.sink("127.0.0.2").script_rcpt("lena@wait.test", (451, "4.2.0 mailbox busy (sink-marker-DW)"))
    srv = mta_server(make_server, mailnet, retry_schedule="1s", delay_warning="2s", max_queue_lifetime="1h",
                     smtp_client_timeout="20s")
    alice = srv.add_user("alice", PW)
    submit(srv, "alice", PW, ["lena@wait.test"], make_message(subject="patience", frm=alice, to="lena@wait.test"))
    files = wait_mail(srv, "alice", 1, mailnet, timeout=20)
    check_dsn(files[0].read_bytes(), "lena@wait.test", action="delayed", status=r"4\.\d{1,3}\.\d{1,3}",
              subject="patience")
    assert outbox_messages(srv), "a delay warning must leave the message queued"
    time.sleep(2)
    assert len(srv.maildir_files("alice")) == 1, "more than one delay warning for one message"
    sink.script_rcpt("lena@wait.test", 250)
    wait_sink(sink, 1, mailnet, srv)
    wait_outbox_empty(srv, mailnet)
    time.sleep(1)
    assert len(srv.maildir_files("alice")) == 1


def test_bounce_of_a_bounce_is_held_not_looped(make_server, mailnet):
    """A message from a remote sender fails; its DSN (from <>) fails too:
    the DSN is set aside in queue/hold — never a bounce to <>, never a
    retry loop."""
    mailnet.dns.mx("dead.test", (10, "mx.dead.test")).a("mx.dead.test", "127.0.0.2")
    mailnet.dns.mx("sender.test", (10, "mx.sender.test")).a("mx.sender.test", "127.0.0.3")
    dest = mailnet.sink("127.0.0.2", name="dest").script_all_rcpts(550)
    back = mailnet.sink("127.0.0.3", name="sender-mx").script_all_rcpts((550, "5.1.1 sender unknown here too"))
    srv = mta_server(make_server, mailnet, extra="relay_networks = 127.0.0.0/8\n", **SHORT)
    relay_mx(srv, "mallory@sender.test", ["nobody@dead.test"],
             make_message(subject="doomed", frm="mallory@sender.test", to="nobody@dead.test"))
    ok = wait_until(lambda: [p for p in srv.queue_files("hold") if not p.name.endswith(".st")], DELIVERY_TIMEOUT)
    assert ok, "the undeliverable bounce was not held\n" + srv.queue_listing() + mailnet.describe() + srv.log_text()
    wait_outbox_empty(srv, mailnet)
    held = [p for p in srv.queue_files("hold") if not p.name.endswith(".st")]
    assert len(held) == 1, [p.name for p in held]
    assert b"\nfrom <>\n" in held[0].read_bytes()[:4096], "the held message is not the bounce (from <>)"
    # the bounce went to the original sender, from <>
    bt = back.transactions()
    assert len(bt) >= 1 and all(t.mail_from == "" for t in bt), mailnet.describe()
    time.sleep(3)
    assert dest.rcpt_attempts.get("nobody@dead.test") == 1, mailnet.describe()
    assert back.rcpt_attempts.get("mallory@sender.test") == 1, "the failed bounce was retried\n" + mailnet.describe()
    for s in (dest, back):
        for t in s.transactions():
            assert all(r for r, _ in t.rcpts), f"a message was sent to <>: {t!r}"


def test_null_sender_message_that_fails_is_held(make_server, mailnet):
    mailnet.dns.mx("dead.test", (10, "mx.dead.test")).a("mx.dead.test", "127.0.0.2")
    dest = mailnet.sink("127.0.0.2").script_all_rcpts(550)
    srv = mta_server(make_server, mailnet, extra="relay_networks = 127.0.0.0/8\n", **SHORT)
    relay_mx(srv, "", ["nobody@dead.test"], make_message(subject="a bounce from elsewhere", frm="MAILER-DAEMON@x.test",
                                                         to="nobody@dead.test"))
    ok = wait_until(lambda: [p for p in srv.queue_files("hold") if not p.name.endswith(".st")], DELIVERY_TIMEOUT)
    assert ok, "the failed null-sender message was not held\n" + srv.queue_listing() + mailnet.describe()
    wait_outbox_empty(srv, mailnet)
    time.sleep(2)
    assert dest.rcpt_attempts.get("nobody@dead.test") == 1, mailnet.describe()
    assert len(dest.transactions()) == 1


# ---- the SMTP client's manners ---------------------------------------------------------------

def test_server_without_pipelining_gets_one_command_at_a_time(make_server, mailnet):
    mailnet.dns.mx("plain.test", (10, "mx.plain.test")).a("mx.plain.test", "127.0.0.2")
    sink = mailnet.sink("127.0.0.2", pipelining=False)
    srv = mta_server(make_server, mailnet, **SHORT)
    srv.add_user("alice", PW)
    rcpts = [f"r{i}@plain.test" for i in range(4)]
    submit(srv, "alice", PW, rcpts, make_message(subject="no pipelining", to=", ".join(rcpts)))
    wait_sink(sink, 4, mailnet, srv)
    assert sink.violations() == [], sink.violations()
    assert len(sink.completed()) == 1, "four recipients on one host go in one transaction"


def test_helo_fallback_when_ehlo_is_refused(make_server, mailnet):
    mailnet.dns.mx("old.test", (10, "mx.old.test")).a("mx.old.test", "127.0.0.2")
    sink = mailnet.sink("127.0.0.2", esmtp=False)
    srv = mta_server(make_server, mailnet, **SHORT)
    srv.add_user("alice", PW)
    submit(srv, "alice", PW, ["olga@old.test"], make_message(subject="rfc 821", to="olga@old.test"))
    wait_sink(sink, 1, mailnet, srv)
    conn = [c for c in sink.connections if c.transactions][0]
    assert conn.helo, f"no HELO after the refused EHLO: {conn.commands}"
    # no ESMTP parameters to a server that did not take EHLO
    assert conn.transactions[0].mail_params == "", conn.transactions[0].mail_params


def test_8bit_message_to_a_7bit_server(make_server, mailnet):
    """8-bit content to a server without 8BITMIME: converted to 7 bit (the
    text survives decoding) or bounced — never 8-bit bytes on the wire."""
    mailnet.dns.mx("seven.test", (10, "mx.seven.test")).a("mx.seven.test", "127.0.0.2")
    sink = mailnet.sink("127.0.0.2", eightbitmime=False)
    srv = mta_server(make_server, mailnet, **SHORT)
    alice = srv.add_user("alice", PW)
    text = "Grüße aus Köln — 8 bit.\r\nZweite Zeile: façade, naïve.\r\n"
    msg = make_message(subject="umlauts", frm=alice, to="pia@seven.test", body=text.encode("utf-8"),
                       extra_headers=["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                                      "Content-Transfer-Encoding: 8bit"])
    submit(srv, "alice", PW, ["pia@seven.test"], msg, mail_opts=["BODY=8BITMIME"])
    ok = wait_until(lambda: sink.delivered_count() >= 1 or srv.maildir_files("alice"), DELIVERY_TIMEOUT)
    assert ok, "neither delivered nor bounced\n" + mailnet.describe() + srv.log_text()
    for t in sink.transactions():
        assert "8BITMIME" not in t.mail_params.upper(), f"BODY=8BITMIME to a server that did not offer it: {t.mail_params}"
        if t.data is not None:
            assert max(t.data) < 0x80, "8-bit bytes sent to a server without 8BITMIME"
    if sink.delivered_count():
        data = sink.delivered_rcpts()[0][1]
        m = parse(data)
        body = m.get_payload(decode=True).decode(m.get_content_charset() or "utf-8")
        assert body.replace("\r\n", "\n") == text.replace("\r\n", "\n"), body
    else:
        check_dsn(srv.maildir_files("alice")[0].read_bytes(), "pia@seven.test", action="failed",
                  status=r"5\.6\.\d{1,3}", subject="umlauts")


def test_connection_reuse_and_per_destination_limit(make_server, mailnet):
    """Ten messages for one host already in the outbox at start: at most
    max_per_destination connections at once, and connections are reused."""
    mailnet.dns.mx("busy.test", (10, "mx.busy.test")).a("mx.busy.test", "127.0.0.2")
    sink = mailnet.sink("127.0.0.2", delay_data=0.2)
    srv = mta_server(make_server, mailnet, start=False, max_per_destination=2, **SHORT)
    outbox = srv.queue_dir("outbox")
    outbox.mkdir(parents=True, exist_ok=True)
    for i in range(10):
        msg = make_message(subject=f"batch {i}", frm="ops@client.test", to=f"u{i}@busy.test")
        write_queue_file(outbox, new_queue_id(), "ops@client.test", [f"u{i}@busy.test"], msg,
                         client_ip="127.0.0.1", origin="smtp")
    srv.start()
    wait_sink(sink, 10, mailnet, srv)
    wait_outbox_empty(srv, mailnet)
    assert sink.max_active <= 2, f"{sink.max_active} simultaneous connections, max_per_destination = 2"
    used = [c for c in sink.connections if c.transactions]
    assert len(used) <= 5, f"{len(used)} connections for 10 messages to one host: no reuse\n" + mailnet.describe()
    assert sorted(r for r, _ in sink.delivered_rcpts()) == sorted(f"u{i}@busy.test" for i in range(10))


# ---- smarthost ---------------------------------------------------------------------------------

def test_smarthost_with_auth(make_server, mailnet, tmp_path):
    """Everything for far.test goes through a second posthorn (AUTH on its
    MX port, a user with a password file); near.test still goes direct
    (smarthost_domains)."""
    mailnet.dns.mx("far.test", (10, "mx.far.test")).a("mx.far.test", "127.0.0.2")
    mailnet.dns.mx("near.test", (10, "mx.near.test")).a("mx.near.test", "127.0.0.3")
    far = mailnet.sink("127.0.0.2", name="far")
    near = mailnet.sink("127.0.0.3", name="near")
    mailnet.dns.start()
    relay = make_server(f"smtp_listen = 127.0.0.8:{mailnet.relay_port}\nhostname = relay.b.test\n"
                        + mailnet.conf_lines(**SHORT), name="smarthost")
    relay.cli("domain", "add", "b.test", check=True)
    relay_user = relay.add_user("relay@b.test", "Smarthost-pw-99!")
    pwfile = tmp_path / "smarthost.pw"
    pwfile.write_text("Smarthost-pw-99!\n")
    os.chmod(pwfile, 0o600)
    srv = mta_server(make_server, mailnet,
                     extra=(f"hostname = origin.a.test\nsmarthost = 127.0.0.8:{mailnet.relay_port}\n"
                            f"smarthost_domains = far.test\nsmarthost_user = {relay_user}\n"
                            f"smarthost_password_file = {pwfile}\n"),
                     name="origin", **SHORT)
    srv.add_user("alice", PW)
    submit(srv, "alice", PW, ["x@far.test"], make_message(subject="via the smarthost", to="x@far.test"))
    submit(srv, "alice", PW, ["y@near.test"], make_message(subject="direct", to="y@near.test"))
    wait_sink(far, 1, mailnet, srv)
    wait_sink(near, 1, mailnet, srv)
    wait_outbox_empty(srv, mailnet)
    far_data = far.delivered_rcpts()[0][1]
    near_data = near.delivered_rcpts()[0][1]
    assert b"by relay.b.test" in far_data, "far.test did not go through the smarthost\n" + far_data[:1000].decode()
    assert b"by relay.b.test" not in near_data, "near.test went through the smarthost"
    # the relay accepted it because origin authenticated as relay@b.test
    auth = [e for e in relay.events() if ev_type(e) == "auth" and e.get("user") == relay_user
            and e.get("result") == "ok"]
    assert auth, "no auth event for the smarthost user on the relay\n" + "\n".join(map(json.dumps, relay.events()[-20:]))
    queued = [e for e in relay.events() if ev_type(e) == "queued"]
    assert any(relay_user in json.dumps(e) for e in queued), queued


# ---- more failure shapes ------------------------------------------------------------------

def test_unknown_domain_bounces(make_server, mailnet):
    """NXDOMAIN is permanent: a DSN at once, not five days of retries."""
    srv = mta_server(make_server, mailnet, retry_schedule="1h", smtp_client_timeout="20s")
    alice = srv.add_user("alice", PW)
    submit(srv, "alice", PW, ["nobody@no-such-domain.test"],
           make_message(subject="typo in the domain", frm=alice, to="nobody@no-such-domain.test"))
    files = wait_mail(srv, "alice", 1, mailnet, timeout=15)
    wait_outbox_empty(srv, mailnet)
    check_dsn(files[0].read_bytes(), "nobody@no-such-domain.test", action="failed", status=r"5\.\d{1,3}\.\d{1,3}",
              subject="typo in the domain")


def test_one_recipient_refused_one_delivered(make_server, mailnet):
    """The DSN names only the failed recipient; the other gets the message
    once and is not retried."""
    mailnet.dns.mx("mixed.test", (10, "mx.mixed.test")).a("mx.mixed.test", "127.0.0.2")
    sink = mailnet.sink("127.0.0.2").script_rcpt("gone@mixed.test", (550, "5.1.1 gone away (sink-marker-MIX)"))
    srv = mta_server(make_server, mailnet, **SHORT)
    alice = srv.add_user("alice", PW)
    submit(srv, "alice", PW, ["here@mixed.test", "gone@mixed.test"],
           make_message(subject="half and half", frm=alice, to="here@mixed.test, gone@mixed.test"))
    files = wait_mail(srv, "alice", 1, mailnet)
    wait_outbox_empty(srv, mailnet)
    raw = files[0].read_bytes()
    check_dsn(raw, "gone@mixed.test", action="failed", status=r"5\.1\.1", diag="sink-marker-MIX",
              subject="half and half")
    assert b"here@mixed.test" not in raw.split(b"message/delivery-status", 1)[1].split(b"rfc822-headers")[0], (
        "the delivered recipient is listed in the delivery report")
    time.sleep(1.5)
    assert sink.delivered_count("here@mixed.test") == 1
    assert sink.rcpt_attempts["gone@mixed.test"] == 1 and sink.rcpt_attempts["here@mixed.test"] == 1
    assert len(srv.maildir_files("alice")) == 1


def test_size_limit_of_the_remote_server(make_server, mailnet):
    """RFC 1870: SIZE=n on MAIL FROM when the server has SIZE; a message
    larger than its limit is not sent and bounces (5.3.4)."""
    mailnet.dns.mx("small.test", (10, "mx.small.test")).a("mx.small.test", "127.0.0.2")
    sink = mailnet.sink("127.0.0.2", size=4000)
    srv = mta_server(make_server, mailnet, **SHORT)
    alice = srv.add_user("alice", PW)
    submit(srv, "alice", PW, ["fits@small.test"], make_message(subject="small one", frm=alice, to="fits@small.test"))
    big = make_message(subject="big one", frm=alice, to="big@small.test", body="x" * 70 + "\r\n" * 1 + ("y" * 76 + "\r\n") * 100)
    submit(srv, "alice", PW, ["big@small.test"], big)
    wait_sink(sink, 1, mailnet, srv, rcpt="fits@small.test")
    files = wait_mail(srv, "alice", 1, mailnet)
    wait_outbox_empty(srv, mailnet)
    check_dsn(files[0].read_bytes(), "big@small.test", action="failed", status=r"5\.3\.4", subject="big one")
    for t in sink.transactions():
        m = re.search(r"(?i)\bSIZE=(\d+)", t.mail_params)
        assert m, f"no SIZE= on MAIL FROM to a server with SIZE: {t.mail_params!r}"
        assert int(m.group(1)) < 4000, t
        assert "big@small.test" not in [r for r, _ in t.rcpts if t.data is not None], "the oversized message was sent"


def test_client_timeout_then_retry(make_server, mailnet):
    """A server that goes silent after DATA: the client gives up after
    smtp_client_timeout (not minutes) and the retry delivers."""
    mailnet.dns.mx("mute.test", (10, "mx.mute.test")).a("mx.mute.test", "127.0.0.2")
    sink = mailnet.sink("127.0.0.2").script_data(STALL, 250)
    srv = mta_server(make_server, mailnet, retry_schedule="1s", smtp_client_timeout="2s")
    srv.add_user("alice", PW)
    t0 = time.monotonic()
    submit(srv, "alice", PW, ["quiet@mute.test"], make_message(subject="hello?", to="quiet@mute.test"))
    wait_sink(sink, 1, mailnet, srv, timeout=20)
    took = time.monotonic() - t0
    assert took < 15, f"delivered only after {took:.1f}s with smtp_client_timeout = 2s"
    wait_outbox_empty(srv, mailnet)
    assert sink.delivered_count() == 1
