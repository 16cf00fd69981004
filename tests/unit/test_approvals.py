"""The two-person rule's store: who may approve, who may use an approval, once, in time."""

from __future__ import annotations

import pytest

from ripcord.approvals import ApprovalRequired, Approvals, required
from ripcord.errors import DeclinedError, InputError
from ripcord.inventory import Inventory
from ripcord.journal import Journal


@pytest.fixture
def store(tmp_path) -> Approvals:
    return Approvals(tmp_path / "approvals", Journal(tmp_path / "journal.jsonl"))


def test_an_approval_is_granted_by_another_operator_and_used_once_by_the_requester(store):
    req = store.request("flatten", "prod", {"flatten_symbol": "ALL"}, "alice", "drill")
    with pytest.raises(DeclinedError, match="must come from another operator"):
        store.approve(req.id, "alice")
    with pytest.raises(ApprovalRequired, match="not approved yet"):
        store.use(req.id, "flatten", "prod", {"flatten_symbol": "ALL"}, "alice")
    store.approve(req.id, "bob")
    with pytest.raises(DeclinedError, match="already approved"):
        store.approve(req.id, "carol")
    with pytest.raises(DeclinedError, match="only they can use it"):
        store.use(req.id, "flatten", "prod", {"flatten_symbol": "ALL"}, "carol")
    with pytest.raises(DeclinedError, match="with {'flatten_symbol': 'ALL'}, not"):
        store.use(req.id, "flatten", "prod", {"flatten_symbol": "BTCUSDT"}, "alice")
    store.use(req.id, "flatten", "prod", {"flatten_symbol": "ALL"}, "alice")
    with pytest.raises(DeclinedError, match="already used"):
        store.use(req.id, "flatten", "prod", {"flatten_symbol": "ALL"}, "alice")
    kinds = [r["kind"] for r in store.journal.records()]
    assert kinds == ["approval-requested", "approval-granted", "approval-used"]
    assert not store.journal.verify()


def test_requests_and_approvals_expire(store, monkeypatch):
    req = store.request("resume", "prod", {}, "alice", "")
    monkeypatch.setenv("RIPCORD_APPROVAL_TTL_S", "0")
    with pytest.raises(DeclinedError, match="has expired"):
        store.approve(req.id, "bob")
    monkeypatch.setenv("RIPCORD_APPROVAL_TTL_S", "900")
    store.approve(req.id, "bob")
    monkeypatch.setenv("RIPCORD_APPROVAL_TTL_S", "0")
    with pytest.raises(DeclinedError, match="approval .* has expired"):
        store.use(req.id, "resume", "prod", {}, "alice")


def test_unknown_or_malformed_ids_are_input_errors(store):
    with pytest.raises(InputError, match="no approval request abc123"):
        store.approve("abc123", "bob")
    with pytest.raises(InputError, match="is not a request id"):
        store.approve("../etc", "bob")


def test_the_rule_comes_from_the_hosts_inventory_and_never_holds_up_a_halt(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text("all:\n  children:\n    prod:\n      vars:\n"
                    "        ripcord_require_approval: [flatten, resume, halt]\n"
                    "      hosts: {exec-1: {}}\n    lab:\n      hosts: {lab-1: {}}\n")
    inventory = Inventory.load([path])
    assert required(inventory, ["exec-1"], "flatten")
    assert not required(inventory, ["lab-1"], "flatten")
    assert not required(inventory, ["exec-1"], "halt")
