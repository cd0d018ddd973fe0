"""The queue console (issue 3): `posthorn queue ...` online (through the
control socket while the server delivers) and offline (on the files of a
stopped server), against a flood.

The flood is written straight into a stopped server's queue/outbox in the
documented formats (queue/queue.h, queue/state.h): 20,000 copies of one
spam (same body, different recipients, one account and IP) and 50
distinct legitimate messages, every one deferred an hour ago with its next
attempt an hour away, as after an afternoon with the destination down.
Writing the 40,100 files takes a couple of seconds.
"""
import json
import os
import re
import time
from pathlib import Path

import pytest

from conftest import DELIVERY_TIMEOUT, QUEUE_ID_RE, make_message, wait_until
from mailnet import (fingerprint, new_queue_id, queue_file_bytes, state_bytes, write_queue_file,
                     write_state)

PW = "Console-pw-2468!"
SPAM_N = 20000
LEGIT_N = 50
SPAM_USER = "intern@shop.example"
SPAM_IP = "203.0.113.66"
# Generous bounds so a slow CI machine (ASan build) does not flake; the real
# figures are in bench/queue-flood.
FAST = float(os.environ.get("POSTHORN_CONSOLE_FAST", "2.0"))


# ---- the console, in one place -------------------------------------------------

def q(srv, *args, check=True, input=None, timeout=120):
    """posthorn queue ARGS... with stdin not a terminal (piped)."""
    r = srv.cli("queue", *args, check=False, input=input if input is not None else b"", timeout=timeout)
    if check:
        assert r.returncode == 0, (f"posthorn queue {' '.join(args)} exited {r.returncode}\n"
                                   f"stdout: {r.stdout.decode(errors='replace')[:3000]}\n"
                                   f"stderr: {r.stderr.decode(errors='replace')[:3000]}")
    return r


def qjson(srv, *args, **kw):
    r = q(srv, *args, "--json", **kw)
    if r.returncode not in (0, 1):
        pytest.fail(f"posthorn queue {' '.join(args)} --json exited {r.returncode}: {r.stderr!r}")
    try:
        return json.loads(r.stdout)
    except ValueError:
        pytest.fail(f"posthorn queue {' '.join(args)} --json is not JSON: {r.stdout[:2000]!r}")


def timed(fn, *a, **kw):
    t = time.monotonic()
    v = fn(*a, **kw)
    return v, time.monotonic() - t


def listing_items(j):
    """The messages of a `queue list --json` answer: a bare array, or an
    object with the array under a conventional key."""
    if isinstance(j, list):
        return j
    for k in ("messages", "items", "list", "results"):
        if isinstance(j.get(k), list):
            return j[k]
    pytest.fail(f"no message array in the list answer: {json.dumps(j)[:1000]}")


def item_id(it):
    return it.get("id") or it.get("queue_id")


def walk(j):
    if isinstance(j, dict):
        yield j
        for v in j.values():
            yield from walk(v)
    elif isinstance(j, list):
        for v in j:
            yield from walk(v)


def group_count(j, key):
    """In a summary answer, the message count of the row whose key is
    `key` (fingerprint, account, IP, ...): the largest count of any object
    that carries the key among its values."""
    best = None
    for d in walk(j):
        if any(isinstance(v, str) and v.lower() == key.lower() for v in d.values()):
            for name in ("messages", "count", "n"):
                if isinstance(d.get(name), int):
                    best = max(best or 0, d[name])
    return best


def loading(j):
    return any(d.get("loading") is True for d in walk(j)) if isinstance(j, (dict, list)) else False


def wait_index(srv, total, timeout=120):
    """Until the server's index is complete with `total` messages."""
    last = [None]

    def ready():
        j = qjson(srv, "summary")
        last[0] = j
        tot = j.get("messages", j.get("total")) if isinstance(j, dict) else None
        return not loading(j) and tot == total
    ok = wait_until(ready, timeout, interval=0.5)
    assert ok, f"index not complete with {total} messages after {timeout}s: {json.dumps(last[0])[:2000]}\n" + srv.log_text()


def message_files(folder: Path):
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if QUEUE_ID_RE.fullmatch(p.name.encode()))


# ---- queue contents --------------------------------------------------------------

SPAM_BODY = ("Dear customer,\r\n\r\nYour parcel is waiting. Confirm your address at\r\n"
             "http://parcel-confirm.invalid/track?id=88231 within 24 hours or it will be returned.\r\n\r\n"
             "Customer service\r\n")


def spam_message(rcpt):
    return make_message(subject="Your parcel is on hold", frm=f"Parcel Service <{SPAM_USER}>", to=rcpt,
                        body=SPAM_BODY, msgid=f"{rcpt.replace('@', '.')}@shop.example")


def legit_message(i, rcpt):
    return make_message(subject=f"Order {1000 + i} confirmed", frm=f"clerk{i}@shop.example", to=rcpt,
                        body=f"Hello,\r\n\r\nyour order number {1000 + i} ships on day {i % 28 + 1}.\r\n",
                        msgid=f"order{i}@shop.example")


def inject(outbox: Path, n_spam, n_legit, spam_domain="victims.test", legit_domain="partner.test", deferred=True):
    """Writes the flood; returns (spam ids, legit ids -> recipient, spam fingerprint)."""
    outbox.mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    spam_fp = fingerprint(spam_message(f"a@{spam_domain}"))
    spam_ids = []
    for i in range(n_spam):
        qid = new_queue_id()
        rcpt = f"victim{i}@{spam_domain}"
        data = queue_file_bytes(qid, SPAM_USER, [rcpt], spam_message(rcpt), received=now - 3600,
                                client_ip=SPAM_IP, helo="[203.0.113.66]", auth_user=SPAM_USER, fp=spam_fp)
        fd = os.open(outbox / qid, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.close(fd)
        if deferred:
            fd = os.open(outbox / f"{qid}.st", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, state_bytes([(rcpt, "deferred", 1, f"mx.{spam_domain}[127.0.0.9]",
                                       "connect: Connection refused")],
                                     first=now - 3000, last=now - 3000, next_attempt=now + 3600))
            os.close(fd)
        spam_ids.append(qid)
    legit = {}
    for i in range(n_legit):
        qid = new_queue_id()
        rcpt = f"buyer{i}@{legit_domain}"
        write_queue_file(outbox, qid, f"clerk{i}@shop.example", [rcpt], legit_message(i, rcpt),
                         received=now - 3000 + i, client_ip=f"198.51.100.{i + 1}",
                         auth_user=f"clerk{i}@shop.example")
        if deferred:
            write_state(outbox, qid, [(rcpt, "deferred", 1, f"mx.{legit_domain}[127.0.0.10]",
                                       "connect: Connection refused")],
                        first=now - 3000, last=now - 3000, next_attempt=now + 3600)
        legit[qid] = rcpt
    return spam_ids, legit, spam_fp


def flood_server(make_server, mailnet, **conf):
    mailnet.dns.mx("victims.test", (10, "mx.victims.test")).a("mx.victims.test", "127.0.0.9")
    mailnet.dns.mx("partner.test", (10, "mx.partner.test")).a("mx.partner.test", "127.0.0.10")
    mailnet.dns.start()
    conf.setdefault("retry_schedule", "1h")
    conf.setdefault("smtp_client_timeout", "20s")
    return make_server(mailnet.conf_lines(**conf), start=False)


# ---- the flood -------------------------------------------------------------------

def test_flood_find_delete_requeue(make_server, mailnet):
    srv = flood_server(make_server, mailnet)
    t0 = time.monotonic()
    spam_ids, legit, fp = inject(srv.queue_dir("outbox"), SPAM_N, LEGIT_N)
    t_write = time.monotonic() - t0
    assert t_write < 60, f"writing the flood took {t_write:.1f}s"
    total = SPAM_N + LEGIT_N

    # the server starts at once; the index fills in the background
    _, t_start = timed(srv.start)
    assert t_start < 5 * FAST, f"start-up with {total} messages in the outbox took {t_start:.1f}s"
    wait_index(srv, total)

    # the flood finder
    j, t_sum = timed(qjson, srv, "summary")
    assert t_sum < FAST, f"queue summary --json took {t_sum:.2f}s with {total} messages"
    assert group_count(j, fp) == SPAM_N, f"summary does not give {fp} {SPAM_N} copies: {json.dumps(j)[:3000]}"
    assert group_count(j, SPAM_USER) == SPAM_N, f"summary does not name {SPAM_USER}: {json.dumps(j)[:3000]}"
    assert group_count(j, SPAM_IP) == SPAM_N, f"summary does not name {SPAM_IP}: {json.dumps(j)[:3000]}"
    r, t_txt = timed(q, srv, "summary")
    assert t_txt < FAST
    text = r.stdout.decode()
    for key in (fp, SPAM_USER, SPAM_IP):
        lines = [l for l in text.splitlines() if key in l]
        assert any(re.search(r"\b20[,.' ]?000\b", l) for l in lines), (
            f"summary table has no line with {key} and 20000:\n{text[:3000]}")

    # a page of the listing
    page, t_list = timed(qjson, srv, "list", "--folder", "outbox", "--limit", "50")
    assert t_list < FAST, f"queue list --limit 50 took {t_list:.2f}s with {total} messages"
    items = listing_items(page)
    assert len(items) == 50
    r, t_list_txt = timed(q, srv, "list", "--limit", "50")
    assert t_list_txt < FAST
    assert len([l for l in r.stdout.decode().splitlines() if QUEUE_ID_RE.search(l.encode())]) == 50
    sel = listing_items(qjson(srv, "list", "--fingerprint", fp, "--limit", "20"))
    assert len(sel) == 20 and all(item_id(it) in set(spam_ids) for it in sel)

    # dry run first: a count, nothing changes
    r = q(srv, "delete", "--fingerprint", fp, "--dry-run")
    assert re.search(r"\b20[,.' ]?000\b", r.stdout.decode() + r.stderr.decode()), (
        f"dry run does not report {SPAM_N}: {r.stdout!r} {r.stderr!r}")
    assert len(message_files(srv.queue_dir("outbox"))) == total
    # the real thing
    r, t_del = timed(q, srv, "delete", "--fingerprint", fp, "--yes")
    assert t_del < 60, f"deleting {SPAM_N} took {t_del:.1f}s"
    left = message_files(srv.queue_dir("outbox"))
    assert sorted(left) == sorted(legit), (
        f"after the delete the outbox has {len(left)} messages; spam left: "
        f"{len(set(left) & set(spam_ids))}, legit missing: {len(set(legit) - set(left))}")
    assert not any(name.endswith(".st") and name[:-3] in set(spam_ids)
                   for name in os.listdir(srv.queue_dir("outbox"))), "state files of deleted messages left"
    j = qjson(srv, "summary")
    assert j.get("messages", j.get("total")) == LEGIT_N, json.dumps(j)[:2000]
    assert group_count(j, fp) in (None, 0)

    # the destination is back: requeue the 50, each arrives once
    sink = mailnet.sink("127.0.0.10", name="partner")
    q(srv, "requeue", "--domain", "partner.test")
    got = sink.wait_delivered(LEGIT_N, 60)
    assert got >= LEGIT_N, f"{got} of {LEGIT_N} legitimate messages delivered after requeue\n" + srv.queue_listing()
    assert wait_until(lambda: not message_files(srv.queue_dir("outbox")), 20), srv.queue_listing()
    time.sleep(1)
    rc = sorted(r for r, _ in sink.delivered_rcpts())
    assert rc == sorted(legit.values()), f"deliveries: {len(rc)}, distinct {len(set(rc))}"


def test_fingerprint_of_a_submitted_message_is_the_documented_one(make_server):
    """The flood above writes fingerprints with mailnet.fingerprint(): it
    must agree with what the server computes for the same message."""
    srv = make_server()
    srv.add_user("alice", PW)
    s = srv.submission("alice", PW)
    msg = spam_message("someone@far.example.com")
    s.sendmail(srv.addr("alice"), ["someone@far.example.com"], msg)
    s.quit()
    assert wait_until(lambda: message_files(srv.queue_dir("outbox")), DELIVERY_TIMEOUT), srv.queue_listing()
    f = srv.queue_dir("outbox") / message_files(srv.queue_dir("outbox"))[0]
    m = re.search(rb"\nfingerprint ([0-9a-f]+)\n", f.read_bytes())
    assert m and m.group(1).decode() == fingerprint(msg), (m and m.group(1), fingerprint(msg))


# ---- online, while delivering ------------------------------------------------------

def test_console_during_active_delivery(make_server, mailnet):
    """hold / delete / retry / release while the sink receives: no message
    lost, none delivered twice, and the console acts on the messages that
    are only waiting their turn (the MTA sends oldest first; the console
    works on the newest 40 while the oldest are on the wire)."""
    n = 150
    mailnet.dns.mx("busy.test", (10, "mx.busy.test")).a("mx.busy.test", "127.0.0.2")
    mailnet.dns.start()
    sink = mailnet.sink("127.0.0.2", delay_data=0.1)
    srv = make_server(mailnet.conf_lines(retry_schedule="1s", smtp_client_timeout="20s", max_per_destination=2),
                      start=False)
    outbox = srv.queue_dir("outbox")
    outbox.mkdir(parents=True, exist_ok=True)
    ids = []
    now = int(time.time())
    for i in range(n):
        qid = new_queue_id()
        write_queue_file(outbox, qid, "ops@client.test", [f"u{i}@busy.test"],
                         make_message(subject=f"busy {i}", to=f"u{i}@busy.test"), client_ip="127.0.0.1",
                         origin="smtp", received=now - n + i)
        ids.append(qid)
    rcpt_of = {qid: f"u{i}@busy.test" for i, qid in enumerate(ids)}
    hold_set, delete_set = ids[-40:-20], ids[-20:]
    srv.start()
    assert wait_until(lambda: sink.delivered_count() >= 5, DELIVERY_TIMEOUT), mailnet.describe()

    before = sink.delivered_count()
    j_hold = qjson(srv, "hold", *hold_set, check=False)
    held = set(message_files(srv.queue_dir("hold")))
    j_del = qjson(srv, "delete", *delete_set, check=False)
    q(srv, "retry", "--yes")
    released = sorted(held)[:10]
    j_rel = qjson(srv, "release", *released, check=False)

    def settled():
        return not message_files(outbox) and not message_files(srv.queue_dir("pending"))
    assert wait_until(settled, 120), srv.queue_listing() + mailnet.describe()
    time.sleep(1)
    counts = {}
    for r, _ in sink.delivered_rcpts():
        counts[r] = counts.get(r, 0) + 1
    twice = {r: k for r, k in counts.items() if k > 1}
    assert not twice, f"delivered more than once: {twice}"

    # what the console reported is what happened
    assert held <= set(hold_set) and len(held) == j_hold.get("done"), (j_hold, sorted(held))
    assert j_rel.get("done") == len(released), j_rel
    still_held = held - set(released)
    assert set(message_files(srv.queue_dir("hold"))) == still_held
    deleted = {qid for qid in delete_set if counts.get(rcpt_of[qid], 0) == 0}
    assert len(deleted) == j_del.get("done"), (j_del, len(deleted))
    for qid in ids:
        got = counts.get(rcpt_of[qid], 0)
        if qid in still_held or qid in deleted:
            assert got == 0, f"{qid}: held or deleted by the console, yet delivered"
        else:
            assert got == 1, f"{qid} ({rcpt_of[qid]}): lost (not delivered, not held, not deleted)"
    # the newest 40 were only waiting their turn: the console must get
    # every one of them
    assert j_hold.get("done") == 20 and j_del.get("done") == 20, (
        f"when {before} of {n} messages (oldest first) had been delivered, hold of the "
        f"20 newest did {j_hold} and delete of 20 others did {j_del}: messages that only wait for a "
        f"connection count as 'busy'")


# ---- quarantine -------------------------------------------------------------------

def quarantine_entries(j):
    if isinstance(j, list):
        return j
    for k in ("quarantines", "items", "folders", "entries"):
        if isinstance(j.get(k), list):
            return j[k]
    pytest.fail(f"no array in quarantine list --json: {json.dumps(j)[:1000]}")


def entry_name(e):
    for k in ("name", "stamp", "id", "dir", "path"):
        if isinstance(e.get(k), str):
            return os.path.basename(e[k].rstrip("/"))
    pytest.fail(f"quarantine entry without a name: {e}")


def test_quarantine_outbox_and_restore(make_server, mailnet):
    mailnet.dns.mx("partner.test", (10, "mx.partner.test")).a("mx.partner.test", "127.0.0.10")
    mailnet.dns.start()
    srv = make_server(mailnet.conf_lines(retry_schedule="1h", smtp_client_timeout="20s"), start=False)
    _, legit, _ = inject(srv.queue_dir("outbox"), 0, 30)
    srv.start()
    wait_index(srv, 30)

    t0 = time.monotonic()
    q(srv, "quarantine", "outbox", "--yes")
    assert time.monotonic() - t0 < 10
    assert message_files(srv.queue_dir("outbox")) == [], "outbox not emptied by quarantine"
    qroot = srv.data / "queue" / "quarantine"
    dirs = [d for d in qroot.iterdir() if d.is_dir()]
    assert len(dirs) == 1, [d.name for d in dirs]
    qdir = dirs[0]
    found = set()
    for dp, _, files in os.walk(qdir):
        found |= {f for f in files if QUEUE_ID_RE.fullmatch(f.encode())}
    assert found == set(legit), f"quarantine holds {len(found)} of 30"
    ents = quarantine_entries(qjson(srv, "quarantine", "list"))
    assert len(ents) == 1 and entry_name(ents[0]) == qdir.name, ents
    assert group_count(ents, qdir.name) == 30, f"quarantine list does not count its 30 messages: {ents}"

    # the server goes on: new mail takes the fresh outbox
    sink = mailnet.sink("127.0.0.10", name="partner")
    srv.add_user("alice", PW)
    s = srv.submission("alice", PW)
    s.sendmail(srv.addr("alice"), ["fresh@partner.test"], make_message(subject="after the quarantine"))
    s.quit()
    assert sink.wait_delivered(1, DELIVERY_TIMEOUT, rcpt="fresh@partner.test") == 1, mailnet.describe()

    # selective restore: three chosen messages back to pending, delivered
    chosen = sorted(legit)[:3]
    q(srv, "quarantine", "restore", qdir.name, *chosen)
    for qid in chosen:
        assert sink.wait_delivered(1, DELIVERY_TIMEOUT, rcpt=legit[qid]) == 1, (qid, mailnet.describe())
    time.sleep(1)
    assert sink.delivered_count() == 4, "restoring chosen messages restored others too"
    # the rest
    q(srv, "quarantine", "restore", qdir.name, "--yes")
    assert sink.wait_delivered(31, 60) >= 31, mailnet.describe() + srv.queue_listing()
    time.sleep(1)
    rc = sorted(r for r, _ in sink.delivered_rcpts())
    assert rc == sorted(list(legit.values()) + ["fresh@partner.test"]), "a restored message was lost or sent twice"


# ---- offline ---------------------------------------------------------------------------

def test_offline_console_on_a_stopped_server(make_server, mailnet):
    mailnet.dns.mx("victims.test", (10, "mx.victims.test")).a("mx.victims.test", "127.0.0.9")
    mailnet.dns.mx("partner.test", (10, "mx.partner.test")).a("mx.partner.test", "127.0.0.10")
    mailnet.dns.start()
    srv = make_server(mailnet.conf_lines(retry_schedule="1s", smtp_client_timeout="20s"), start=False)
    spam_ids, legit, fp = inject(srv.queue_dir("outbox"), 300, 20, deferred=False)
    assert not srv.alive()

    page = listing_items(qjson(srv, "list", "--limit", "10"))
    assert len(page) == 10
    nxt = listing_items(qjson(srv, "list", "--limit", "10", "--after", item_id(page[-1])))
    assert len(nxt) == 10 and not {item_id(i) for i in page} & {item_id(i) for i in nxt}, "pages overlap"
    j = qjson(srv, "summary")
    assert group_count(j, fp) == 300 and group_count(j, SPAM_USER) == 300, json.dumps(j)[:2000]
    r = q(srv, "delete", "--fingerprint", fp, "--dry-run")
    assert "300" in r.stdout.decode() + r.stderr.decode()
    assert len(message_files(srv.queue_dir("outbox"))) == 320
    q(srv, "delete", "--fingerprint", fp, "--yes")
    assert sorted(message_files(srv.queue_dir("outbox"))) == sorted(legit)
    hold_me = sorted(legit)[0]
    q(srv, "hold", hold_me)
    assert message_files(srv.queue_dir("hold")) == [hold_me]

    # the daemon sees what the console did
    sink = mailnet.sink("127.0.0.10", name="partner")
    victims = mailnet.sink("127.0.0.9", name="victims")
    srv.start()
    assert sink.wait_delivered(19, DELIVERY_TIMEOUT) >= 19, mailnet.describe() + srv.queue_listing()
    time.sleep(1.5)
    assert victims.transactions() == [], "deleted spam was delivered"
    assert sorted(r for r, _ in sink.delivered_rcpts()) == sorted(r for i, r in legit.items() if i != hold_me)
    # release online: it goes out too
    q(srv, "release", hold_me)
    assert sink.wait_delivered(20, DELIVERY_TIMEOUT) >= 20, mailnet.describe()


# ---- safety and output formats ----------------------------------------------------------

def test_all_operations_want_a_confirmation(make_server, mailnet):
    mailnet.dns.start()
    srv = make_server(mailnet.conf_lines(retry_schedule="1h"), start=False)
    _, legit, _ = inject(srv.queue_dir("outbox"), 0, 10)
    srv.start()
    wait_index(srv, 10)
    # stdin is a pipe, not a terminal: no question can be asked → refused
    for args in (("delete", "--folder", "outbox"), ("hold", "--folder", "outbox"), ("quarantine", "outbox")):
        r = q(srv, *args, check=False, input=b"yes\n")
        assert r.returncode != 0, f"queue {' '.join(args)} without --yes on a pipe was not refused: {r.stdout!r}"
        assert sorted(message_files(srv.queue_dir("outbox"))) == sorted(legit), f"queue {' '.join(args)} changed the queue"
        assert message_files(srv.queue_dir("hold")) == []
    # the dry run of "all" needs no confirmation and changes nothing
    r = q(srv, "delete", "--folder", "outbox", "--dry-run")
    assert "10" in r.stdout.decode() + r.stderr.decode()
    assert len(message_files(srv.queue_dir("outbox"))) == 10
    q(srv, "delete", "--folder", "outbox", "--yes")
    assert message_files(srv.queue_dir("outbox")) == []


def test_every_listing_has_json(make_server, mailnet):
    mailnet.dns.start()
    srv = make_server(mailnet.conf_lines(retry_schedule="1h"), start=False)
    spam_ids, legit, fp = inject(srv.queue_dir("outbox"), 5, 5)
    srv.start()
    wait_index(srv, 10)
    j = qjson(srv, "list")
    assert len(listing_items(j)) == 10
    it = [i for i in listing_items(j) if item_id(i) == spam_ids[0]][0]
    assert fp in json.dumps(it) and SPAM_IP in json.dumps(it) and SPAM_USER in json.dumps(it), it
    assert group_count(qjson(srv, "summary"), fp) == 5
    c = qjson(srv, "count")
    assert "outbox" in json.dumps(c)
    for args in (("list", "--folder", "outbox", "--sort", "size"), ("list", "--user", SPAM_USER),
                 ("list", "--ip", SPAM_IP), ("list", "--ip", "203.0.113.0/24"), ("list", "--sender", SPAM_USER),
                 ("list", "--domain", "partner.test"), ("list", "--newer", "55m"), ("list", "--fingerprint", fp[:8])):
        sel = listing_items(qjson(srv, *args))
        want = 10 if "--folder" in args else 5
        assert len(sel) == want, (args, len(sel))
    sizes = [i["size"] for i in listing_items(qjson(srv, "list", "--sort", "size"))]
    assert sizes == sorted(sizes, reverse=True), f"--sort size is largest first: {sizes}"
    ages = [item_id(i) for i in listing_items(qjson(srv, "list", "--sort", "age"))]
    assert ages == spam_ids + sorted(legit), "--sort age is oldest first"
    assert [item_id(i) for i in listing_items(qjson(srv, "list", "--sort", "age", "--reverse"))] == ages[::-1]
    doms = [i["domains"][0] for i in listing_items(qjson(srv, "list", "--sort", "domain"))]
    assert doms == sorted(doms), doms
    q(srv, "quarantine", "outbox", "--yes")
    ents = quarantine_entries(qjson(srv, "quarantine", "list"))
    assert len(ents) == 1 and group_count(ents, entry_name(ents[0])) == 10, ents


def test_outbox_renamed_away_while_stopped_is_recreated(make_server, mailnet):
    """The classic manual procedure keeps working: the administrator
    renames the outbox away while the server is stopped."""
    mailnet.dns.mx("partner.test", (10, "mx.partner.test")).a("mx.partner.test", "127.0.0.10")
    mailnet.dns.start()
    srv = make_server(mailnet.conf_lines(retry_schedule="1h"), start=False)
    inject(srv.queue_dir("outbox"), 50, 0)
    os.rename(srv.queue_dir("outbox"), srv.data / "queue" / "outbox.flood")
    sink = mailnet.sink("127.0.0.10")
    srv.start()
    assert srv.queue_dir("outbox").is_dir()
    srv.add_user("alice", PW)
    s = srv.submission("alice", PW)
    s.sendmail(srv.addr("alice"), ["x@partner.test"], make_message(subject="after the rename"))
    s.quit()
    assert sink.wait_delivered(1, DELIVERY_TIMEOUT) == 1, mailnet.describe() + srv.queue_listing()
    assert len(message_files(srv.data / "queue" / "outbox.flood")) == 50


# ---- regressions from the hostile review of the console ---------------------------

def test_fast_delete_during_delivery_never_sends_what_it_deleted(make_server, mailnet):
    """The directory-swap delete (most of a big outbox) while the MTA is
    sending: every spam is either reported deleted or delivered, never
    both, and nothing is sent after the command has answered."""
    n_spam, n_legit = 6000, 10
    srv = flood_server(make_server, mailnet, retry_schedule="5s", max_per_destination="5")
    sink = mailnet.sink("127.0.0.9", name="victims")
    spam_ids, legit, fp = inject(srv.queue_dir("outbox"), n_spam, n_legit, deferred=False)
    srv.start()
    wait_until(lambda: sink.delivered_count() >= 20, 60)
    r = q(srv, "delete", "--fingerprint", fp, "--yes", "--json", check=False)
    answered = sink.delivered_count()
    out = json.loads(r.stdout)
    deleted = out.get("done", out.get("deleted"))
    assert isinstance(deleted, int), out
    time.sleep(5)
    sent_spam = len([r for r, _ in sink.delivered_rcpts() if r.endswith("@victims.test")])
    assert sent_spam + deleted <= n_spam, (
        f"{deleted} reported deleted but {sent_spam} of {n_spam} spam were delivered")
    assert sink.delivered_count() - answered <= 5, (
        f"{sink.delivered_count() - answered} messages sent after the delete answered")
    left = set(message_files(srv.queue_dir("outbox")))
    assert set(legit) <= left, "a legitimate message vanished"


def test_delete_with_a_filter_that_matches_everything_asks_first(make_server, mailnet):
    srv = flood_server(make_server, mailnet)
    inject(srv.queue_dir("outbox"), 20, 5)
    srv.start()
    wait_index(srv, 25)
    r = q(srv, "delete", "--older", "0s", check=False)
    assert r.returncode != 0 and b"--yes" in r.stderr, (r.stdout, r.stderr)
    assert len(message_files(srv.queue_dir("outbox"))) == 25


def test_release_and_requeue_of_a_held_bounce_retry_it(make_server, mailnet):
    """A held message whose recipients failed is tried again on release
    (not held again at once) and requeue keeps it (not dropped as done)."""
    srv = flood_server(make_server, mailnet, retry_schedule="1s")
    hold = srv.queue_dir("hold")
    hold.mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    sink = mailnet.sink("127.0.0.10", name="partner")
    for i in range(2):
        qid = new_queue_id()
        rcpt = f"buyer{i}@partner.test"
        write_queue_file(hold, qid, "", [rcpt], legit_message(i, rcpt), received=now - 60)
        write_state(hold, qid, [(rcpt, "failed", 1, "mx.partner.test[127.0.0.10]", "550 5.1.1 no such user")],
                    first=now - 60, last=now - 60, next_attempt=0)
    ids = message_files(hold)
    assert len(ids) == 2
    srv.start()  # held messages written while stopped: the index has them
    wait_index(srv, 2)
    q(srv, "release", ids[0])
    q(srv, "requeue", ids[1])
    got = sink.wait_delivered(2, 60)
    assert got == 2, f"{got} of 2 held messages delivered after release/requeue\n" + srv.queue_listing()
