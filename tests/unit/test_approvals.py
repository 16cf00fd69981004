"""The two-person rule's store: who may approve, who may use an approval, once, in time, for
exactly what was asked; a store edited by hand, or through a symlink, forges nothing."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ripcord import approvals
from ripcord.approvals import ApprovalRequired, Approvals, Binding, guarded, ttl_s
from ripcord.errors import DeclinedError, InputError
from ripcord.inventory import Inventory
from ripcord.journal import Journal

FLATTEN = Binding("flatten", "prod", ["exec-1"], {"flatten_symbol": "ALL"}, "flatten.yml", "p1", "i1")


@pytest.fixture
def store(tmp_path) -> Approvals:
    return Approvals(tmp_path / "approvals", Journal(tmp_path / "state" / "journal.jsonl"))


def other(**changes) -> Binding:
    return Binding(**{**vars(FLATTEN), **changes})


def test_an_approval_is_granted_by_another_operator_and_used_once_by_the_requester(store):
    req = store.request(FLATTEN, 900, "alice", "drill")
    with pytest.raises(DeclinedError, match="must come from another operator"):
        store.approve(req.id, "alice")
    with pytest.raises(ApprovalRequired, match="not approved yet"):
        store.use(req.id, FLATTEN, "alice")
    store.approve(req.id, "bob")
    with pytest.raises(DeclinedError, match="already approved"):
        store.approve(req.id, "carol")
    with pytest.raises(DeclinedError, match="only they can use it"):
        store.use(req.id, FLATTEN, "carol")
    with pytest.raises(DeclinedError, match="with {'flatten_symbol': 'ALL'}, not"):
        store.use(req.id, other(options={"flatten_symbol": "BTCUSDT"}), "alice")
    store.use(req.id, FLATTEN, "alice")
    with pytest.raises(DeclinedError, match="already used"):
        store.use(req.id, FLATTEN, "alice")
    kinds = [r["kind"] for r in store.journal.records()]
    assert kinds == ["approval-requested", "approval-granted", "approval-used"]
    assert not store.journal.verify()


@pytest.mark.parametrize("changes, field", [
    ({"hosts": ["exec-1", "exec-2"]}, "hosts"), ({"inventory_sha256": "i2"}, "inventory_sha256"),
    ({"playbook_sha256": "p2"}, "playbook_sha256"), ({"pattern": "exec"}, "pattern"),
    ({"procedure": "cancel-all"}, "procedure")])
def test_an_approval_binds_inventory_hosts_playbook_pattern_and_procedure(store, changes, field):
    req = store.request(FLATTEN, 900, "alice", "")
    store.approve(req.id, "bob")
    with pytest.raises(DeclinedError, match=f"{field} differ"):
        store.use(req.id, other(**changes), "alice")
    store.use(req.id, FLATTEN, "alice")  # refusals do not use it up


def test_requests_and_approvals_expire_by_the_inventorys_lifetime_not_the_environment(
        store, monkeypatch):
    monkeypatch.setenv("RIPCORD_APPROVAL_TTL_S", "999999")  # the requester's environment: ignored
    now = [1000.0]
    monkeypatch.setattr(approvals.time, "time", lambda: now[0])
    req = store.request(FLATTEN, 60, "alice", "")
    now[0] += 61
    with pytest.raises(DeclinedError, match="has expired"):
        store.approve(req.id, "bob")
    req = store.request(FLATTEN, 60, "alice", "")
    store.approve(req.id, "bob")
    now[0] += 61
    with pytest.raises(DeclinedError, match="approval .* has expired"):
        store.use(req.id, FLATTEN, "alice")


def test_a_hand_edited_request_is_refused(store):
    req = store.request(FLATTEN, 900, "alice", "")
    path = store.dir / f"{req.id}.json"
    record = json.loads(path.read_text())
    record.update(approved_by="mallory", approved_at=record["requested_at"])  # "approved"
    path.write_text(json.dumps(record))
    with pytest.raises(DeclinedError, match="changed outside ripcord"):
        store.use(req.id, FLATTEN, "alice")
    copied = store.request(FLATTEN, 900, "alice", "")  # a genuine file under another id
    (store.dir / f"{copied.id}.json").write_text(path.read_text())
    with pytest.raises(DeclinedError, match="changed outside ripcord"):
        store.approve(copied.id, "bob")


def test_an_old_copy_of_an_approval_cannot_be_used_again(store):
    req = store.request(FLATTEN, 900, "alice", "")
    store.approve(req.id, "bob")
    path = store.dir / f"{req.id}.json"
    approved = path.read_text()  # signed and unused
    store.use(req.id, FLATTEN, "alice")
    path.write_text(approved)
    with pytest.raises(DeclinedError, match="already used"):
        store.use(req.id, FLATTEN, "alice")


def test_the_key_is_private_and_made_once(store):
    store.request(FLATTEN, 900, "alice", "")
    key = store.key_file.read_bytes()
    assert stat.S_IMODE(store.key_file.stat().st_mode) == 0o600 and len(key) == 32
    store.request(FLATTEN, 900, "alice", "")
    assert store.key_file.read_bytes() == key
    os.chmod(store.key_file, 0o644)
    with pytest.raises(InputError, match="mode 600"):
        store.request(FLATTEN, 900, "alice", "")


def test_the_store_never_follows_a_symlink(store, tmp_path):
    req = store.request(FLATTEN, 900, "alice", "")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = store.dir / f"{req.id}.json"
    path.unlink()
    path.symlink_to(victim)
    with pytest.raises(DeclinedError, match="cannot be read"):
        store.approve(req.id, "bob")
    assert victim.read_text() == "precious"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = tmp_path / "linked"
    linked.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(InputError, match="symlink"):
        Approvals(linked, store.journal).request(FLATTEN, 900, "alice", "")
    assert not list(elsewhere.iterdir())
    assert not [p for p in store.dir.iterdir() if p.name.endswith(".tmp")]


def test_unknown_or_malformed_ids_are_input_errors(store):
    with pytest.raises(InputError, match="no approval request abc123"):
        store.approve("abc123", "bob")
    with pytest.raises(InputError, match="is not a request id"):
        store.approve("../etc", "bob")


def inventory(tmp_path, text: str) -> Inventory:
    path = tmp_path / "inv.yml"
    path.write_text(text)
    return Inventory.load([path])


def test_the_rule_and_the_lifetime_are_read_after_templating(tmp_path, monkeypatch):
    monkeypatch.setenv("RIPCORD_APPROVAL_TTL_S", "0")
    inv = inventory(tmp_path, "all:\n  children:\n    prod:\n      vars:\n"
                              "        rule: [flatten, resume]\n"
                              "        ripcord_require_approval: '{{ rule }}'\n"
                              "        ripcord_approval_ttl_s: '{{ 2 * 60 }}'\n"
                              "      hosts: {exec-1: {}}\n    lab:\n      hosts: {lab-1: {}}\n")
    assert guarded(inv, "exec-1") == {"flatten", "resume"}
    assert guarded(inv, "lab-1") == set()
    assert ttl_s(inv, ["exec-1"]) == 120
    assert ttl_s(inv, ["lab-1"]) == approvals.DEFAULT_TTL_S


def test_a_rule_that_does_not_render_to_names_is_invalid_input(tmp_path):
    inv = inventory(tmp_path, "all:\n  hosts:\n    exec-1:\n"
                              "      ripcord_require_approval: '{{ nosuch }}'\n"
                              "    exec-2:\n      ripcord_require_approval: {flatten: 1}\n"
                              "    exec-3:\n      ripcord_approval_ttl_s: soon\n")
    with pytest.raises(InputError, match="cannot be rendered"):
        guarded(inv, "exec-1")
    with pytest.raises(InputError, match="must be a list"):
        guarded(inv, "exec-2")
    with pytest.raises(InputError, match="positive number"):
        ttl_s(inv, ["exec-3"])


def test_the_inventory_digest_changes_with_the_hosts_variables(tmp_path):
    one = inventory(tmp_path, "all:\n  hosts:\n    exec-1: {exchange_url: 'http://a'}\n")
    two = inventory(tmp_path, "all:\n  hosts:\n    exec-1: {exchange_url: 'http://b'}\n")
    assert approvals.inventory_digest(one, ["exec-1"]) == approvals.inventory_digest(one, ["exec-1"])
    assert approvals.inventory_digest(one, ["exec-1"]) != approvals.inventory_digest(two, ["exec-1"])
