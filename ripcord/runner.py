"""Run plays over hosts: connections, a bounded worker pool, serial batches, handlers, recap.

Linear strategy, as Ansible's: each task runs on every active host of the batch (in parallel,
at most `forks` at a time) before the next task starts. A host that fails leaves the play; one
that is unreachable is reported as unreachable, never counted as done. Unlike Ansible, `rescue`
and `always` run whatever --tags selects: cleanup must not depend on a tag filter.
"""

from __future__ import annotations

import importlib
import math
import re
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import jinja2

from ripcord.connection import Connection
from ripcord.errors import DeclinedError, RipcordError, UnreachableError
from ripcord.inventory import Inventory
from ripcord.lock import HostLock, owner_record
from ripcord.modules import REGISTRY, Result, TaskContext
from ripcord.playbook import Play, Playbook, Task
from ripcord.templating import Secrets, Templar, resolve_vars
from ripcord.unsafe import Unsafe, wrap

if TYPE_CHECKING:
    from ripcord.verify import CheckResult

SECRET_NAME = re.compile(r"secret|passw|token|key|credential", re.IGNORECASE)
OUTCOMES = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")


@dataclass
class Options:
    check: bool = False
    diff: bool = False
    tags: frozenset[str] = frozenset()
    skip_tags: frozenset[str] = frozenset()
    extra_vars: dict[str, Any] = field(default_factory=dict)
    forks: int = 20
    limit: str | None = None  # the operator's --host pattern, intersected with each play's hosts
    lock_wait_s: float = 10.0
    playbook_dir: str = "."
    reason: str = ""  # why the operator runs this: ripcord_reason, and the journal
    take_locks: bool = True  # the kill switch takes none: a halt must never wait for a lock


@dataclass
class HostState:
    """What the run knows about one host: its variables, results and counters."""

    name: str
    facts: dict[str, Any] = field(default_factory=dict)  # set_fact and register
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    failed: bool = False
    unreachable: bool = False
    notified: set[str] = field(default_factory=set)
    touched: bool = False  # a task ran here (verification targets touched hosts)
    last_failure: dict[str, Any] | None = None  # what a rescue section sees


@dataclass
class TaskRecord:
    """One task on one host, for the report and the journal."""

    play: str
    task: str
    host: str
    outcome: str
    msg: str = ""
    duration_s: float = 0.0
    diff: str | None = None
    module: str | None = None


class Runner:
    def __init__(self, inventory: Inventory, options: Options, *,
                 confirm: Callable[[str, str | None], bool], display=None,
                 run_id: str = "run", operator: str = "unknown", command: str = "ripcord"):
        self.inventory = inventory
        self.options = options
        self.confirm = confirm
        self.display = display
        self.secrets = Secrets()
        self.templar = Templar(self.secrets)
        self.hosts: dict[str, HostState] = {}
        self.connections: dict[str, Connection | UnreachableError] = {}
        self.connect_lock = threading.Lock()
        self.locks: dict[str, HostLock] = {}
        self.records: list[TaskRecord] = []
        self.checks: list[CheckResult] = []
        self.owner = owner_record(run_id, operator, command)
        self.operator = Unsafe(operator)  # operator text is data, never a template
        self.reason = Unsafe(options.reason)
        self.extra_vars = wrap(options.extra_vars)
        for name, value in self.extra_vars.items():  # -e db_password=...: never shown
            if SECRET_NAME.search(name):
                self._add_secrets(value)
        self.batch: list[str] = []
        self.interrupted = False
        self.pool = ThreadPoolExecutor(max_workers=max(1, options.forks))

    # --- the run ------------------------------------------------------------------------

    def run(self, playbook: Playbook) -> list[TaskRecord]:
        try:
            for play in playbook.plays:
                self._run_play(play)
        except KeyboardInterrupt:
            self.interrupted = True  # tasks under way end as "interrupted", not as lost hosts
            raise
        finally:
            self._release()
        return self.records

    def _release(self) -> None:
        """Release every lock (in parallel) and close every connection."""
        def release(lock: HostLock) -> None:
            try:
                lock.release()
            except RipcordError:
                pass  # a host lost mid-run keeps its lock until the lease or pid check breaks it
        list(self.pool.map(release, self.locks.values()))
        for conn in self.connections.values():
            if isinstance(conn, Connection):
                conn.close()
        # After Ctrl-C, the tasks under way end with their connections: wait for their records.
        self.pool.shutdown(wait=self.interrupted, cancel_futures=True)

    def play_hosts(self, play: Play) -> list[str]:
        hosts = self.inventory.select(play.hosts)
        if self.options.limit:
            allowed = set(self.inventory.select(self.options.limit))
            hosts = [h for h in hosts if h in allowed]
        return hosts

    def _run_play(self, play: Play) -> None:
        hosts = self.play_hosts(play)
        if play.verify and not self.options.check:  # pytest's imports overlap the network waits
            threading.Thread(target=importlib.import_module, args=("ripcord.verify",),
                             daemon=True).start()
        for name in hosts:
            self.hosts.setdefault(name, HostState(name))
        if self.display:
            self.display.play_start(play, hosts)
        batches = serial_batches(hosts, play.serial)
        for number, batch in enumerate(batches):
            self.batch = batch
            active = self._connect([h for h in batch if not self._gone(h)])
            aborted = self._run_tasks(play, play.tasks, active, batch)
            self._run_handlers(play, [h for h in active if not self._gone(h)])
            if aborted or all(self._gone(h) for h in batch):  # a batch lost entirely stops the play
                for host in (h for later in batches[number + 1:] for h in later):
                    self._fail(play, host, "not run: the play stopped after an earlier batch failed")
                break
        if play.verify:
            self._verify(play, hosts)

    def _verify(self, play: Play, hosts: list[str]) -> None:
        """The play's checks, on exactly the hosts it touched and left standing (a failed host
        has failed already), over the same connections.

        A failed check fails its host (and so the run). Under --check nothing changed, so there
        is nothing to verify.
        """
        targets = [h for h in hosts if self.hosts[h].touched and not self._gone(h)
                   and isinstance(self.connections.get(h), Connection)]
        if self.options.check or not targets:
            if self.display:
                why = "under --check" if self.options.check else "on no touched host"
                self.display.note(f"verify: not run {why}")
            return
        from ripcord.verify import run_checks  # pytest and testinfra: only when a play verifies

        connections = {h: self.connections[h] for h in targets}
        hostvars = {h: self._vars(play, None, h) for h in targets}
        for spec in play.verify:
            if self.display:
                self.display.verify_start(spec.select, targets)
            report = run_checks(spec.select, connections, hostvars, retry_s=spec.retry_s)
            self.checks.extend(report.results)
            for result in report.results:
                if self.display and result.outcome != "failed":  # failures print as records
                    self.display.check_result(result)
                if result.outcome == "failed":
                    state = self.hosts[result.host]
                    state.failed = True
                    state.stats["failed"] += 1
                    self._record(None, result.host, "failed", f"check {result.id}: {result.message}",
                                 result.duration, None, play=play, name=f"verify {result.id}")

    def _gone(self, host: str) -> bool:
        state = self.hosts[host]
        return state.failed or state.unreachable

    def _fail(self, play: Play, host: str, msg: str, task: Task | None = None) -> None:
        """A selected host the run could not act on, or that got no result: a failure."""
        state = self.hosts[host]
        state.failed = True
        state.stats["failed"] += 1
        self._record(task, host, "failed", msg, 0.0, None, play=play,
                     name=None if task else "not run")

    # --- connections and locks ----------------------------------------------------------

    def _connect(self, hosts: list[str]) -> list[str]:
        """Open (once per run) and lock each host, in parallel; returns those that made it.

        Serialized: tasks delegating to the same host from several workers must share one
        connection (and one lock), not race to open two.
        """
        with self.connect_lock:
            todo = [h for h in hosts if h not in self.connections]
            opened = list(self.pool.map(self._open, todo)) if len(todo) > 1 else \
                [self._open(h) for h in todo]  # from a worker: no waiting on the pool it is in
            for host, outcome in zip(todo, opened, strict=True):
                self.connections[host] = outcome
        reachable = []
        for host in hosts:
            conn = self.connections[host]
            if isinstance(conn, Connection):
                reachable.append(host)
            elif not self.hosts[host].unreachable:
                self._mark_unreachable(host, None, str(conn))
        return reachable

    def _open(self, host: str) -> Connection | UnreachableError:
        conn = Connection(host, self.inventory.connection_for(host))
        try:
            conn.open()
            if not self.options.check and self.options.take_locks:
                lock = HostLock(conn, self._lock_dir(host), self.owner)
                lock.acquire(self.options.lock_wait_s)
                self.locks[host] = lock
        except UnreachableError as exc:
            conn.close()
            return exc
        except RipcordError as exc:  # the lock is held: this host is not ours to change now
            conn.close()
            return UnreachableError(str(exc))
        return conn

    def _lock_dir(self, host: str) -> str:
        """The host's titan_home (rendered), else the login's home directory (".")."""
        variables = self.inventory.host_vars(host)
        home = variables.get("titan_home")
        return str(self.templar.render(home, variables)) if home else "."

    def _mark_unreachable(self, host: str, task: Task | None, msg: str) -> None:
        state = self.hosts[host]
        state.unreachable = True
        state.stats["unreachable"] += 1
        self._record(task, host, "unreachable", msg, 0.0, None)

    # --- tasks --------------------------------------------------------------------------

    def _selected(self, task: Task) -> bool:
        """--tags / --skip-tags, as Ansible: the `always` tag runs unless skipped by name.

        Blocks are always entered: their tasks carry the block's tags and are checked one by one.
        """
        if task.is_block:
            return True
        if task.tags & self.options.skip_tags:
            return False
        if self.options.tags:
            return bool(task.tags & self.options.tags) or "always" in task.tags
        return True

    def _run_tasks(self, play: Play, tasks: list[Task], hosts: list[str], batch: list[str],
                   force: bool = False) -> bool:
        """Run tasks in lockstep; returns True when the play must stop (fatal or max fail %)."""
        for task in tasks:
            active = [h for h in hosts if not self._gone(h)]
            if not active and not self._reaches_unreachable(task, batch):
                return False
            if not force and not self._selected(task):
                continue
            if task.is_block:
                if self._run_block(play, task, active, batch, force):
                    return True
                continue
            self._run_task(play, task, active, batch)
            if self._must_abort(play, batch):
                return True
        return False

    def _reaches_unreachable(self, task: Task, batch: list[str]) -> bool:
        """Whether task still has hosts to act on when SSH reaches none: an SSH-optional fleet
        module (the kill switch) acts on hosts it cannot log in to."""
        if task.is_block:
            return False
        module = REGISTRY[task.module]
        return module.fleet and module.ssh_optional and any(
            self.hosts[h].unreachable and not self.hosts[h].failed for h in batch)

    def _run_block(self, play: Play, block: Task, hosts: list[str], batch: list[str],
                   force: bool) -> bool:
        inner = _inherit(block)
        before = {h for h in hosts if self._gone(h)}
        aborted = self._run_tasks(play, inner.block or [], hosts, batch, force)
        failed = [h for h in hosts if self.hosts[h].failed and h not in before]
        if inner.rescue and failed:
            for host in failed:  # rescued hosts rejoin the play, knowing what failed
                state = self.hosts[host]
                state.failed = False
                state.stats["failed"] -= 1  # as Ansible's recap: rescued, not failed
                state.stats["rescued"] += 1
                state.facts.update(state.last_failure or {})
            aborted = self._run_tasks(play, inner.rescue, failed, batch, force=True) or aborted
        if inner.always:
            survivors = [h for h in hosts if not self.hosts[h].unreachable]
            failed_before_always = {h for h in survivors if self.hosts[h].failed}
            for host in failed_before_always:  # always runs on failed hosts too
                self.hosts[host].failed = False
            self._run_tasks(play, inner.always, survivors, batch, force=True)
            for host in failed_before_always:
                self.hosts[host].failed = True
        return aborted or self._must_abort(play, batch)

    def _must_abort(self, play: Play, batch: list[str]) -> bool:
        failed = [h for h in batch if self.hosts[h].failed or self.hosts[h].unreachable]
        if not failed:
            return False
        if play.any_errors_fatal:
            for host in batch:
                self.hosts[host].failed = True
            return True
        if play.max_fail_percentage is not None:
            return len(failed) / len(batch) * 100 > play.max_fail_percentage
        return False

    def _run_task(self, play: Play, task: Task, hosts: list[str], batch: list[str] | None = None
                  ) -> None:
        module = REGISTRY[task.module]
        if module.fleet:
            if module.ssh_optional:  # also the batch's hosts SSH could not reach
                hosts = [h for h in batch or hosts if h in hosts or
                         (self.hosts[h].unreachable and not self.hosts[h].failed)]
            self._run_fleet_task(play, task, module, hosts)
            return
        once = task.run_once or module.once
        targets = hosts[:1] if once else hosts
        if self.display:
            self.display.task_start(task, targets)
        try:
            results = list(self.pool.map(lambda h: self._execute(play, task, h), targets))
        finally:
            if self.display:
                self.display.task_end()
        if once:  # run_once: the result stands for every host, as in Ansible
            for host in hosts[1:]:
                self._apply(play, task, host, *results[0])

    def _run_fleet_task(self, play: Play, task: Task, module_cls, hosts: list[str]) -> None:
        """A fleet module acts on every host of the batch at once (the kill switch publishes one
        NATS command and writes every halt file in parallel) and answers for each host.

        Fail closed: whatever goes wrong (a template, the module itself) fails the task on every
        host it concerned, and a host the module gave no answer for has failed. An SSH-optional
        module is also given the hosts SSH could not reach (conn None); they stay unreachable in
        the recap whatever the module did for them. Ctrl-C waits for the module (its rungs are
        bounded by their deadlines) so that what was started is finished and reported.
        """
        started = time.monotonic()
        if self.display:
            self.display.task_start(task, hosts)
        results: dict[str, Result | UnreachableError] = {}
        contexts: dict[str, TaskContext] = {}
        with _deferred_interrupt() as interrupted:
            try:
                args: dict[str, Any] | None = None
                for host in hosts:
                    variables = self._vars(play, task, host)
                    if not all(self.templar.truth(c, variables) for c in task.when):
                        results[host] = Result(skipped=True, msg="condition false")
                        continue
                    if args is None:  # fleet-wide arguments: rendered once, with the first host's vars
                        args = _drop_omitted(self.templar.render(task.args, variables))
                    conn = self.connections.get(host)
                    contexts[host] = self._context(task, host, variables,
                                                   conn if isinstance(conn, Connection) else None)
                    if not isinstance(conn, Connection):
                        contexts[host].unreachable = str(conn) if conn else "not connected"
                if contexts:
                    problems = module_cls.check_args(args)
                    if problems:
                        raise RipcordError(f"{task.where}: " + "; ".join(problems))
                    self._note_secrets(module_cls, args)
                    results.update(module_cls().run_fleet(contexts, module_cls.with_defaults(args)))
            except DeclinedError:
                raise
            except (jinja2.TemplateError, RipcordError) as exc:
                results.update(dict.fromkeys((h for h in hosts if h not in results),
                                             Result(failed=True, msg=_short(exc))))
            except Exception as exc:  # a module bug fails its task, not the whole run
                results.update(dict.fromkeys(
                    (h for h in hosts if h not in results),
                    Result(failed=True, msg=f"module {task.module} crashed: {exc!r}")))
            finally:
                if self.display:
                    self.display.task_end()
            for host in hosts:
                result = results.get(host)
                if isinstance(result, UnreachableError):
                    if not self.hosts[host].unreachable:
                        self._mark_unreachable(host, task, str(result))
                    continue
                if result is None:
                    result = Result(failed=True, msg=f"module {task.module} gave no result for this host")
                self._apply(play, task, host, _outcome(result), result, started=started)
        if interrupted:
            raise KeyboardInterrupt

    def _vars(self, play: Play, task: Task | None, host: str) -> dict[str, Any]:
        """Variables for one task on one host, by Ansible's precedence (later wins)."""
        state = self.hosts[host]
        values: dict[str, Any] = {}
        values.update(self.inventory.host_vars(host))
        values.update(play.vars)
        values.update(task.vars if task else {})
        values.update(state.facts)
        values.update(self.extra_vars)
        values.update({
            "inventory_hostname": host, "inventory_hostname_short": host.split(".")[0],
            "group_names": sorted(g for g in self.inventory.groups_of(host) if g not in ("all", "ungrouped")),
            "groups": {name: self.inventory.group_hosts(name) for name in self.inventory.groups},
            "hostvars": _HostVars(self.inventory, self.hosts),
            "play_hosts": self.play_hosts(play), "ansible_play_hosts": self.play_hosts(play),
            "ansible_check_mode": self.options.check, "ansible_diff_mode": self.options.diff,
            "ansible_play_batch": list(self.batch), "playbook_dir": self.options.playbook_dir,
            "omit": _OMIT, "ripcord_operator": self.operator, "ripcord_reason": self.reason,
        })
        return resolve_vars(self.templar, values)

    def _execute(self, play: Play, task: Task, host: str) -> tuple[str, Result]:
        """Run one task on one host: when, render, module, until/retries, *_when overrides."""
        started = time.monotonic()
        try:
            variables = self._vars(play, task, host)
            if not all(self.templar.truth(c, variables) for c in task.when):
                result = Result(skipped=True, msg="condition false")
                return self._apply(play, task, host, "skipped", result, started=started)
            result = self._attempts(task, host, variables)
        except UnreachableError as exc:
            if self.interrupted:
                result = Result(failed=True, msg="interrupted (Ctrl-C) while it ran")
                return self._apply(play, task, host, "failed", result, started=started)
            self._mark_unreachable(host, task, str(exc))
            return "unreachable", Result(failed=True, msg=str(exc))
        except DeclinedError:
            raise
        except (jinja2.TemplateError, RipcordError) as exc:
            result = Result(failed=True, msg=_short(exc))
        except Exception as exc:  # a module bug must fail the task, not the whole run
            result = Result(failed=True, msg=f"module {task.module} crashed: {exc!r}")
        return self._apply(play, task, host, _outcome(result), result, started=started)

    def _attempts(self, task: Task, host: str, variables: dict[str, Any]) -> Result:
        module_cls = REGISTRY[task.module]
        target = self.templar.render(task.delegate_to, variables) if task.delegate_to else host
        conn = None
        if not module_cls.on_controller:
            if target not in self.connections:
                self._connect([target])
            conn = self.connections[target]
            if not isinstance(conn, Connection):
                raise conn
        attempts = task.retries + 1 if task.until is not None else 1
        for attempt in range(1, attempts + 1):
            args = _drop_omitted(self.templar.render(task.args, variables))
            problems = module_cls.check_args(args) if not module_cls.open_args else []
            if problems:
                return Result(failed=True, msg=f"{task.where}: " + "; ".join(problems))
            self._note_secrets(module_cls, args)
            ctx = self._context(task, host, variables, conn)
            result = module_cls().run(ctx, module_cls.with_defaults(args))
            self._overrides(task, result, variables)
            if task.until is None:
                return result
            scope = {**variables, **({task.register: result.registered()} if task.register else {})}
            if self.templar.truth(task.until, scope):
                result.data["attempts"] = attempt
                return result
            if attempt < attempts:
                time.sleep(task.delay)
        result.failed = True
        result.msg = result.msg or f"until condition never held after {attempts} attempts"
        result.data["attempts"] = attempts
        return result

    def _context(self, task: Task, host: str, variables: dict[str, Any],
                 conn: Connection | None) -> TaskContext:
        return TaskContext(host=host, vars=variables, conn=conn, check=self.options.check,
                           diff=self.options.diff, timeout=task.timeout, templar=self.templar,
                           secrets=self.secrets, confirm=self.confirm,
                           playbook_dir=self.options.playbook_dir)

    def _note_secrets(self, module_cls, args: dict[str, Any]) -> None:
        """Arguments a module declares secret (Arg(secret=True)) join the run's secrets."""
        for key, spec in module_cls.args.items():
            if spec.secret and key in args:
                self._add_secrets(args[key])

    def _add_secrets(self, value: Any) -> None:
        """value, or each value inside a mapping or list, as a secret of the run."""
        for item in value.values() if isinstance(value, dict) else \
                value if isinstance(value, list) else [value]:
            self.secrets.add(item)

    def _overrides(self, task: Task, result: Result, variables: dict[str, Any]) -> None:
        """changed_when / failed_when, evaluated with the registered result in scope."""
        if task.changed_when is None and task.failed_when is None:
            return
        scope = {**variables, **({task.register: result.registered()} if task.register else {}),
                 "result": result.registered()}
        if task.changed_when is not None:
            result.changed = _all_true(self.templar, task.changed_when, scope)
        if task.failed_when is not None:
            result.failed = _all_true(self.templar, task.failed_when, scope)
            if not result.failed:
                result.msg = result.msg if not result.msg.startswith("non-zero") else ""

    def _apply(self, play: Play, task: Task, host: str, outcome: str, result: Result,
               started: float | None = None) -> tuple[str, Result]:
        """Record a task's outcome on a host: counters, register, facts, notify, failure."""
        state = self.hosts[host]
        state.touched = True
        if outcome == "failed" and task.ignore_errors:
            outcome = "ignored"
        if task.register:  # what a host returned is data: never rendered again
            state.facts[task.register] = wrap(result.registered())
        facts = result.data.get("ansible_facts")
        if facts and not result.failed:
            state.facts.update(wrap(facts))
        if result.changed and not result.failed:
            state.notified.update(task.notify)
        state.stats[outcome] += 1
        if outcome == "changed":
            state.stats["ok"] += 1  # Ansible counts a changed task as ok too
        if outcome == "failed":
            state.failed = True
            state.last_failure = {"ansible_failed_task": {"name": task.name, "where": task.where},
                                  "ansible_failed_result": result.registered()}
        duration = time.monotonic() - started if started else 0.0
        self._record(task, host, outcome, result.msg, duration, result.diff, play=play)
        return outcome, result

    def _record(self, task: Task | None, host: str, outcome: str, msg: str, duration: float,
                diff: str | None, play: Play | None = None, name: str | None = None) -> None:
        label = name or (task.name if task else "connect")
        record = TaskRecord(play.name if play else "", label, host,
                            outcome, self.secrets.redact(msg), round(duration, 3),
                            self.secrets.redact(diff) if diff else None,
                            task.module if task else None)
        self.records.append(record)
        if self.display:
            self.display.host_result(record)

    def _run_handlers(self, play: Play, hosts: list[str]) -> None:
        """Notified handlers, once each, at the end of the play (batch), in definition order."""
        for handler in play.handlers:
            names = {handler.name, *handler.listen}
            targets = [h for h in hosts if self.hosts[h].notified & names and not self._gone(h)]
            if targets:
                self._run_task(play, handler, targets)
        for host in hosts:
            self.hosts[host].notified.clear()

    # --- results ------------------------------------------------------------------------

    def check_summary(self) -> dict[str, Any]:
        if not self.checks:  # no play verified: spare every other run the import of pytest
            return {"passed": 0, "failed": 0, "waived": 0, "results": []}
        from ripcord.verify import summarize

        return summarize(self.checks)

    def summary(self) -> dict[str, dict[str, int]]:
        return {name: dict(state.stats) for name, state in self.hosts.items()}


class _HostVars(dict):
    """hostvars[name]: another host's inventory vars and facts, looked up lazily."""

    def __init__(self, inventory: Inventory, states: dict[str, HostState]):
        super().__init__()
        self.inventory = inventory
        self.states = states

    def __getitem__(self, host: str) -> dict[str, Any]:
        facts = self.states[host].facts if host in self.states else {}
        return {**self.inventory.host_vars(host), **facts}

    def __contains__(self, host: object) -> bool:
        return host in self.inventory.hosts


_OMIT = "__ripcord_omit__"


class _deferred_interrupt:
    """Hold Ctrl-C (SIGINT) while a block runs, then report whether it came.

    Only in the main thread, where Python delivers signals; elsewhere the block runs as is.
    """

    def __enter__(self) -> list[bool]:
        self.came: list[bool] = []
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, lambda *_: self.came.append(True))
        return self.came

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _outcome(result: Result) -> str:
    return "failed" if result.failed else "skipped" if result.skipped else \
        "changed" if result.changed else "ok"


def _drop_omitted(args: Any) -> Any:
    """Arguments set to `{{ omit }}` are left out, as in Ansible."""
    if isinstance(args, dict):
        return {k: _drop_omitted(v) for k, v in args.items() if v != _OMIT}
    return args


def _inherit(block: Task) -> Task:
    """Block keywords (when, tags, vars, ...) apply to the tasks inside it."""
    def child(task: Task) -> Task:
        return replace(task, when=[*block.when, *task.when], tags=block.tags | task.tags,
                       vars={**block.vars, **task.vars},
                       ignore_errors=task.ignore_errors or block.ignore_errors,
                       timeout=task.timeout or block.timeout,
                       delegate_to=task.delegate_to or block.delegate_to,
                       run_once=task.run_once or block.run_once)

    return replace(block, block=[child(t) for t in block.block or []],
                   rescue=[child(t) for t in block.rescue], always=[child(t) for t in block.always])


def _all_true(templar: Templar, conditions: Any, scope: dict[str, Any]) -> bool:
    items = conditions if isinstance(conditions, list) else [conditions]
    return all(templar.truth(c, scope) for c in items)


def _short(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc) or exc.__class__.__name__


def serial_batches(hosts: list[str], serial: Any) -> list[list[str]]:
    """Split hosts into rolling batches: an int, a percentage, or a ramp list (last size repeats)."""
    if not serial:
        return [hosts] if hosts else []
    sizes = serial if isinstance(serial, list) else [serial]
    batches, start, index = [], 0, 0
    while start < len(hosts):
        size = _batch_size(sizes[min(index, len(sizes) - 1)], len(hosts))
        batches.append(hosts[start:start + size])
        start += size
        index += 1
    return batches


def _batch_size(value: int | str, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return max(1, math.floor(total * float(value[:-1]) / 100))
    return max(1, int(value))
