"""Run plays over hosts: connections, a bounded worker pool, serial batches, handlers, recap.

Linear strategy, as Ansible's: each task runs on every active host of the batch (in parallel,
at most `forks` at a time) before the next task starts. A host that fails leaves the play; one
that is unreachable is reported as unreachable, never counted as done. Unlike Ansible, `rescue`
and `always` run whatever --tags selects: cleanup must not depend on a tag filter.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import jinja2

from ripcord.connection import Connection, LocalConnection
from ripcord.errors import RipcordError, UnreachableError
from ripcord.inventory import Inventory
from ripcord.lock import HostLock, owner_record
from ripcord.modules import REGISTRY
from ripcord.modules.base import Result
from ripcord.playbook import Play, Playbook, Task, load_task_file
from ripcord.plays import LOCALHOST, every_task, inherit
from ripcord.runstate import SECRET_NAME, HostState, Options, TaskRecord, serial_batches
from ripcord.taskreader import task_file_path
from ripcord.taskrun import TaskRunner
from ripcord.templating import Secrets, Templar
from ripcord.unsafe import Unsafe, wrap

__all__ = ["Options", "Runner", "TaskRecord", "serial_batches"]  # what callers import from here

if TYPE_CHECKING:
    from ripcord.verify import CheckResult


class Runner(TaskRunner):
    """One run of a playbook: its plays, batches, blocks, handlers, connections, locks and checks;
    each task goes through TaskRunner (taskrun.py)."""

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
        # one per (host, login user): None is the inventory's ansible_user, else a remote_user
        self.connections: dict[tuple[str, str | None], Connection | UnreachableError] = {}
        self.connect_lock = threading.Lock()
        self.local: LocalConnection | None = None  # the controller, for delegate_to: localhost
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
        self.writes_in_check = False
        self.included: dict[tuple[int, str], list[Task]] = {}  # include_tasks: its file's tasks
        self.pool = ThreadPoolExecutor(max_workers=max(1, options.forks))

    # --- the run ------------------------------------------------------------------------

    def run(self, playbook: Playbook) -> list[TaskRecord]:
        # a task with check_mode: false changes hosts even under --check: then it takes locks
        self.writes_in_check = any(task.check_mode is False for task in every_task(playbook))
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
        """Release every lock (in parallel) and close every connection. After Ctrl-C, first stop
        what the interrupted tasks started on the hosts (which also frees their workers)."""
        opened = [c for c in [*self.connections.values(), self.local]
                  if isinstance(c, (Connection, LocalConnection))]
        if self.interrupted:
            stoppers = [threading.Thread(target=c.stop_running) for c in opened if c.running]
            for thread in stoppers:
                thread.start()
            for thread in stoppers:
                thread.join()

        def release(lock: HostLock) -> None:
            try:
                lock.release()
            except RipcordError:
                pass  # a host lost mid-run keeps its lock until the lease or pid check breaks it
        list(self.pool.map(release, self.locks.values()))
        for conn in opened:
            conn.close()
        # After Ctrl-C, the tasks under way end with their connections: wait for their records.
        self.pool.shutdown(wait=self.interrupted, cancel_futures=True)

    def play_hosts(self, play: Play) -> list[str]:
        if self._implicit_local(play.hosts.strip()):  # the controller: --host limits inventory hosts
            return [play.hosts.strip()]
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
            active = self._connect([h for h in batch if not self._gone(h)],
                                   lambda h, p=play: self._login_user(p.remote_user, p, None, h))
            aborted = False
            if play.gather_facts:  # as Ansible: before anything else of the play
                aborted = self._run_tasks(play, [GATHER], active, batch)
            for section in (play.pre_tasks, play.tasks, play.post_tasks):  # handlers after each
                if section and not aborted:
                    aborted = self._run_tasks(play, section, active, batch)
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
        logins = {h: self.connections.get((h, self._login_user(play.remote_user, play, None, h)))
                  for h in hosts}
        targets = [h for h in hosts if self.hosts[h].touched and not self._gone(h)
                   and isinstance(logins[h], Connection)]
        if self.options.check or not targets:
            if self.display:
                why = "under --check" if self.options.check else "on no touched host"
                self.display.note(f"verify: not run {why}")
            return
        from ripcord.verify import run_checks  # pytest and testinfra: only when a play verifies

        connections = {h: logins[h] for h in targets}
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

    def _connect(self, hosts: list[str], user_of: Callable[[str], str | None] = lambda h: None
                 ) -> list[str]:
        """Open (once per run and login user) and lock each host, in parallel; returns those that
        made it. user_of(host): the login user (remote_user), None for the inventory's.

        Serialized: tasks delegating to the same host from several workers must share one
        connection (and one lock), not race to open two.
        """
        keys = [(h, user_of(h)) for h in hosts]
        with self.connect_lock:
            todo = [key for key in keys if key not in self.connections]
            opened = list(self.pool.map(self._open, todo)) if len(todo) > 1 else \
                [self._open(key) for key in todo]  # from a worker: no waiting on the pool it is in
            for key, outcome in zip(todo, opened, strict=True):
                self.connections[key] = outcome
        reachable = []
        for host, key in zip(hosts, keys, strict=True):
            conn = self.connections[key]
            if isinstance(conn, (Connection, LocalConnection)):
                reachable.append(host)
            elif not self.hosts[host].unreachable:
                self._mark_unreachable(host, None, str(conn))
        return reachable

    def _open(self, key: tuple[str, str | None]) -> Connection | UnreachableError:
        host, user = key
        if self._implicit_local(host):
            return self._local_unlocked()
        spec = self.inventory.connection_for(host)
        conn = Connection(host, replace(spec, user=user) if user else spec)
        try:
            conn.open()
            if (not self.options.check or self.writes_in_check) and self.options.take_locks \
                    and host not in self.locks:  # one lock a host, whichever login took it
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

    def _login(self, host: str, user: str | None) -> Connection | UnreachableError:
        """The run's connection to host as user (None: the inventory's), opened (and the host
        locked) the first time a task needs it; a failure is returned, for the task to report."""
        with self.connect_lock:
            if (host, user) not in self.connections:
                self.connections[(host, user)] = self._open((host, user))
            return self.connections[(host, user)]

    def _login_user(self, value: str | None, play: Play, task: Task | None, host: str,
                    variables: dict[str, Any] | None = None) -> str | None:
        """The login user a play's or task's remote_user gives on host (rendered with its
        variables), or None: the inventory's ansible_user, which it also is when it names that."""
        if not value or self._implicit_local(host):
            return None
        user = str(self.templar.render(value, variables or self._vars(play, task, host)))
        default = self.inventory.connection_for(host).user
        return None if user == default else user

    def _local(self) -> LocalConnection:
        with self.connect_lock:
            return self._local_unlocked()

    def _local_unlocked(self) -> LocalConnection:
        if self.local is None:
            self.local = LocalConnection()
        return self.local

    def _implicit_local(self, host: str) -> bool:
        """Ansible's implicit localhost: named (localhost, 127.0.0.1), not in the inventory, and
        matched by no group (not even `all`)."""
        return host in LOCALHOST and host not in self.inventory.hosts

    def _inventory_vars(self, host: str) -> dict[str, Any]:
        """A host's inventory vars; the implicit localhost has the `all` group's own, as Ansible."""
        if self._implicit_local(host):
            return {**self.inventory.group_vars("all"), "ansible_connection": "local"}
        return self.inventory.host_vars(host)

    def _lock_dir(self, host: str) -> str:
        """The host's titan_home (rendered), else the login's home directory (".")."""
        variables = self.inventory.host_vars(host)
        home = variables.get("titan_home")
        return str(self.templar.render(home, variables)) if home else "."

    # --- tasks --------------------------------------------------------------------------

    def _selected(self, task: Task) -> bool:
        """--tags / --skip-tags, as Ansible: the `always` tag runs unless skipped by name.

        Blocks are always entered: their tasks carry the block's tags and are checked one by one.
        """
        if task.is_block or task.is_include:
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
            if task.is_include:
                if self._run_include(play, task, active, batch, force):
                    return True
                continue
            if REGISTRY[task.module].name == "meta":  # flush_handlers: the notified handlers run now
                self._run_handlers(play, active)
                continue
            self._run_task(play, task, active, batch)
            if self._must_abort(play, batch):
                return True
        return False

    def _reaches_unreachable(self, task: Task, batch: list[str]) -> bool:
        """Whether task still has hosts to act on when SSH reaches none: an SSH-optional fleet
        module (the kill switch) acts on hosts it cannot log in to."""
        if task.is_block or task.is_include:
            return False
        module = REGISTRY[task.module]
        return module.fleet and module.ssh_optional and any(
            self.hosts[h].unreachable and not self.hosts[h].failed for h in batch)

    def _run_block(self, play: Play, block: Task, hosts: list[str], batch: list[str],
                   force: bool) -> bool:
        inner = inherit(block)
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

    def _run_include(self, play: Play, include: Task, hosts: list[str], batch: list[str],
                     force: bool) -> bool:
        """include_tasks: its file's tasks on each host whose `when` holds, once per item when it
        loops. The hosts run the n-th item's pass together (each with its own item; hosts whose
        template names another file, as a group of their own); a host's failure to resolve the
        file, or an invalid file, fails that host."""
        passes: dict[str, list[tuple[dict[str, Any], list[Task]]]] = {}
        for host in hosts:
            try:
                passes[host] = self._include_passes(play, include, host)
            except (jinja2.TemplateError, RipcordError) as exc:
                msg = getattr(exc, "message", None) or str(exc)
                self._apply(play, include, host, "failed", Result(failed=True, msg=msg))
        for index in range(max((len(found) for found in passes.values()), default=0)):
            groups: dict[int, tuple[list[Task], list[str]]] = {}
            for host, found in passes.items():
                if index < len(found) and not self._gone(host):
                    groups.setdefault(id(found[index][1]), (found[index][1], []))[1].append(host)
            for tasks, group in groups.values():
                outer = {host: self.hosts[host].include_vars for host in group}
                for host in group:
                    self.hosts[host].include_vars = {**outer[host], **passes[host][index][0]}
                try:
                    if self._run_tasks(play, tasks, group, batch, force):
                        return True
                finally:
                    for host in group:
                        self.hosts[host].include_vars = outer[host]
        return self._must_abort(play, batch)

    def _include_passes(self, play: Play, include: Task, host: str
                        ) -> list[tuple[dict[str, Any], list[Task]]]:
        """(the variables an item sets, the tasks) for each pass of include on host."""
        variables = self._vars(play, include, host)
        if include.loop is None:
            if not all(self.templar.truth(c, variables) for c in include.when):
                return []
            return [({}, self._included(play, include, variables))]
        items = self.templar.render(include.loop, variables)
        if not isinstance(items, list):
            raise RipcordError(f"{include.where}: loop: expected a list, got {type(items).__name__}")
        control = include.loop_control
        loop_var = control.get("loop_var", "item")
        passes = []
        for index, item in enumerate(items):
            scope = {loop_var: wrap(item), "ansible_loop_var": loop_var}
            if control.get("index_var"):
                scope[control["index_var"]] = index
            if all(self.templar.truth(c, {**variables, **scope}) for c in include.when):
                passes.append((scope, self._included(play, include, {**variables, **scope})))
        return passes

    def _included(self, play: Play, include: Task, variables: dict[str, Any]) -> list[Task]:
        """The include's tasks, with its keywords: read up front, or (a templated name) read and
        validated once per file it resolves to, the first time it does."""
        if include.included is not None:
            key = (id(include), include.include)
        else:
            name = self.templar.render(include.include, variables)
            if not isinstance(name, str) or not name.strip():
                raise RipcordError(f"{include.where}: include_tasks: {include.include!r} gives "
                                   f"{name!r}, not a file name")
            key = (id(include), task_file_path(include.file, name))
            beside = os.path.realpath(os.path.dirname(include.file))
            if os.path.commonpath([beside, os.path.realpath(key[1])]) != beside:  # host data chose it?
                raise RipcordError(f"{include.where}: include_tasks: {name!r} is not in {beside} "
                                   "(a templated task file must be beside the including file or below)")
        if key not in self.included:
            tasks = include.included
            if tasks is None:
                handlers = {n for h in play.handlers for n in (h.name, *h.listen)}
                tasks = load_task_file(key[1], by=(include.file, include.line), known=variables,
                                       handlers=handlers)
            self.included[key] = inherit(include, tasks)
        return self.included[key]

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


GATHER = Task(name="Gathering Facts", file="", line=0, module="setup")  # read-only: --check too
