"""One task on the hosts of a batch: its variables, the module's call (per host, or once for the
whole batch for a fleet module), retries and overrides, and what its result does to each host.

Fail closed: any error while rendering or inside a module fails the task on the hosts it
concerned, with a one-line reason; a host a fleet module gave no answer for has failed. What a
host returns is stored as data (`Unsafe`), never rendered again. The Runner (runner.py) owns the
plays, batches, blocks, connections and locks, and calls in here for each task.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import jinja2

from ripcord.connection import Connection, LocalConnection
from ripcord.errors import DeclinedError, RipcordError, UnreachableError
from ripcord.inventory import Inventory
from ripcord.modules import REGISTRY, Result, TaskContext
from ripcord.playbook import Play, Task
from ripcord.plays import LOCALHOST
from ripcord.runstate import HostState, TaskRecord
from ripcord.templating import Templar, resolve_vars
from ripcord.unsafe import wrap

LOGINS = (Connection, LocalConnection)  # what a host's connection is (else why it has none)


class TaskRunner:
    """The Runner's task half (a mixin: it uses the Runner's hosts, connections, pool, templar,
    secrets, display and records)."""

    def _mark_unreachable(self, host: str, task: Task | None, msg: str) -> None:
        state = self.hosts[host]
        state.unreachable = True
        state.stats["unreachable"] += 1
        self._record(task, host, "unreachable", msg, 0.0, None)

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
                    conn = self.connections.get(
                        (host, self._login_user(task.remote_user, play, task, host, variables)))
                    contexts[host] = self._context(task, host, variables,
                                                   conn if isinstance(conn, LOGINS) else None)
                    if not isinstance(conn, LOGINS):
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
        values.update(self._inventory_vars(host))
        values.update(play.vars)
        values.update(task.vars if task else {})
        values.update(state.facts)
        values.update(state.include_vars)
        values.update(self.extra_vars)
        values.update({
            "inventory_hostname": host, "inventory_hostname_short": host.split(".")[0],
            "group_names": [] if host not in self.inventory.hosts else
            sorted(g for g in self.inventory.groups_of(host) if g not in ("all", "ungrouped")),
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
            if task.loop is not None:
                result = self._loop(task, host, variables)
            elif not all(self.templar.truth(c, variables) for c in task.when):
                result = Result(skipped=True, msg="condition false")
                return self._apply(play, task, host, "skipped", result, started=started)
            else:
                result = self._attempts(task, host, variables)
        except UnreachableError as exc:
            if not self.interrupted:
                self._mark_unreachable(host, task, str(exc))
                return "unreachable", Result(failed=True, msg=str(exc))
            result = Result(failed=True)
        except DeclinedError:
            raise
        except (jinja2.TemplateError, RipcordError) as exc:
            result = Result(failed=True, msg=_short(exc))
        except Exception as exc:  # a module bug must fail the task, not the whole run
            result = Result(failed=True, msg=f"module {task.module} crashed: {exc!r}")
        if self.interrupted:  # whatever it said, Ctrl-C stopped it
            result = Result(failed=True, msg="interrupted (Ctrl-C) while it ran: stopped")
        return self._apply(play, task, host, _outcome(result), result, started=started)

    def _loop(self, task: Task, host: str, variables: dict[str, Any]) -> Result:
        """loop (with_items, with_list, with_dict): the task once per item, `when` per item, as
        Ansible; the registered result carries `results`, one per item. Items are data."""
        items = self.templar.render(task.loop, variables)
        if not isinstance(items, list):
            raise RipcordError(f"{task.where}: loop: expected a list, got {type(items).__name__} "
                               "(a mapping loops with `| dict2items`)")
        control = task.loop_control
        loop_var = control.get("loop_var", "item")
        results: list[dict[str, Any]] = []
        failures: list[str] = []
        for index, item in enumerate(items):
            if index and control.get("pause"):
                time.sleep(float(control["pause"]))
            scope = {**variables, loop_var: wrap(item), "ansible_loop_var": loop_var}
            if control.get("index_var"):
                scope[control["index_var"]] = index
            label = self.templar.render(control.get("label", f"{{{{ {loop_var} }}}}"), scope)
            if all(self.templar.truth(c, scope) for c in task.when):
                result = self._attempts(task, host, scope)
            else:
                result = Result(skipped=True, msg="condition false")
            if result.failed:
                failures.append(f"item {label}: {result.msg or 'failed'}")
            results.append({**result.registered(), loop_var: item, "ansible_loop_var": loop_var,
                            "item_label": label})
        changed = any(r["changed"] and not r["failed"] for r in results)
        skipped = all(r["skipped"] for r in results)
        counts = ", ".join(f"{sum(bool(r[k]) for r in results)} {k}" for k in ("changed", "failed")
                           if any(r[k] for r in results))
        msg = "; ".join(failures) or ("no items" if not results else
                                      f"{len(results)} items" + (f": {counts}" if counts else ""))
        return Result(changed=changed, failed=bool(failures), skipped=skipped, msg=msg,
                      data={"results": results})

    def _attempts(self, task: Task, host: str, variables: dict[str, Any]) -> Result:
        module_cls = REGISTRY[task.module]
        target = self.templar.render(task.delegate_to, variables) if task.delegate_to else host
        conn = None
        if not module_cls.on_controller and target in LOCALHOST and target not in self.inventory.hosts:
            conn = self._local()  # delegate_to: localhost, as Ansible's implicit localhost
        elif not module_cls.on_controller:
            conn = self._login(target, self._login_user(task.remote_user, None, task, target, variables))
            if not isinstance(conn, LOGINS):
                raise conn
        attempts = task.retries + 1 if task.until is not None else 1
        for attempt in range(1, attempts + 1):
            args = _drop_omitted(self.templar.render(task.args, variables))
            problems = module_cls.check_args(args) if not module_cls.open_args else []
            if problems:
                return Result(failed=True, msg=f"{task.where}: " + "; ".join(problems))
            self._note_secrets(module_cls, args)
            if task.no_log:  # its values are secrets, wherever they show up
                self._add_secrets(_leaves(args))
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
        environment = self.templar.render(task.environment, variables) if task.environment else {}
        if not isinstance(environment, dict):
            raise RipcordError(f"{task.where}: environment: expected a mapping, got "
                               f"{type(environment).__name__}")
        check = self.options.check if task.check_mode is None else task.check_mode
        return TaskContext(host=host, vars=variables, conn=conn, check=check, become=_become(task, variables),
                           diff=self.options.diff, timeout=task.timeout, templar=self.templar,
                           secrets=self.secrets, confirm=self.confirm,
                           playbook_dir=self.options.playbook_dir,
                           environment={str(k): str(v) for k, v in environment.items()})

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
        self._record(task, host, outcome, CENSORED if task.no_log else result.msg, duration,
                     None if task.no_log else result.diff, play=play)
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


CENSORED = "censored: the output is hidden (no_log: true)"


def _become(task: Task, variables: dict[str, Any]) -> str | None:
    """The user the task's commands run as through `sudo -n`, or None: the task's (block's,
    play's) become*, else the inventory's ansible_become*, as Ansible."""
    from ripcord.templating import truthy

    become = task.become if task.become is not None else truthy(variables.get("ansible_become", False))
    if not become:
        return None
    method = task.become_method or variables.get("ansible_become_method") or "sudo"
    if method != "sudo":
        raise RipcordError(f"{task.where}: become_method {method!r}: only sudo (sudo -n, never "
                           "prompting) is supported")
    return str(task.become_user or variables.get("ansible_become_user") or "root")


def _leaves(value: Any) -> list[Any]:
    """Every string and number inside value."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else []


def _all_true(templar: Templar, conditions: Any, scope: dict[str, Any]) -> bool:
    items = conditions if isinstance(conditions, list) else [conditions]
    return all(templar.truth(c, scope) for c in items)


def _short(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
