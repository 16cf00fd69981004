"""Host patterns, resolved exactly as Ansible resolves them (ansible-core 2.19).

A pattern is a list of terms separated by ``,`` (or, without any comma, by ``:``):

    web                 a group (all hosts in it and its children) or a host name
    web-*  ~web-\\d+     a shell glob or (``~``) a regular expression, on group and host names
    web[0] web[1:] web[-1] web[0:2]
                        a subscript: a slice of the term's hosts (end inclusive)
    &db                 intersection          !db-1     exclusion
    all  *              every host

Like Ansible, all plain terms are applied first, then every ``&`` term, then every ``!`` term,
whatever their position; a pattern with only ``&``/``!`` terms starts from ``all``. Results keep
the order in which the terms produced their hosts, without duplicates.

Two places where ripcord is stricter than Ansible, because a silently ignored typo is the worst
thing that can happen while halting a fleet: a malformed pattern (empty term, unbalanced
bracket, bad subscript, bad regex) raises :class:`InputError`, and so does a pattern whose
result is empty (Ansible warns and does nothing). Ansible's implicit ``localhost`` (matched when
nothing else is) does not exist here: ripcord only reaches hosts that are in the inventory.

This module only knows names; :class:`ripcord.inventory.Inventory` feeds it.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import re
from collections.abc import Callable, Mapping, Sequence

from ripcord.errors import InputError

__all__ = ["parse_address", "select_hosts", "split_pattern"]

# -- host[:port] addresses (ansible.parsing.utils.addresses) --------------------------------------
# A pattern that is a valid address (``db-1``, ``10.0.0.1``, ``fe80::1``, ``web[1:3]``) is one
# term, so that colons in IPv6 addresses and ranges are not taken for separators.

_NUMERIC_RANGE = r"\[(?:[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_HEX_RANGE = r"\[(?:[0-9a-f]+:[0-9a-f]+)(?::[0-9]+)?\]"
_ALNUM_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_IPV6_PART = rf"(?:[0-9a-f]{{1,4}}|{_HEX_RANGE})"
_IPV4_PART = rf"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{_NUMERIC_RANGE})"
_LABEL = rf"(?:[\w]|{_ALNUM_RANGE})(?:[\w_-]|{_ALNUM_RANGE})*(?<![_-])"

_BRACKETED_HOSTPORT = re.compile(r"^\[(.+)\]:([0-9]+)$")
_HOSTPORT = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$")
_IPV4 = re.compile(rf"^(?:{_IPV4_PART}\.){{3}}{_IPV4_PART}$", re.IGNORECASE)
_IPV6_FORMS = (  # C is one 16-bit part: from 1:2:3:4:5:6:7:8 to ::, and IPv4 inside IPv6
    "(?:C:){7}C", "(?:C:){1,6}:", "(?:C:)(?::C){1,6}", "(?:C:){2}(?::C){1,5}",
    "(?:C:){3}(?::C){1,4}", "(?:C:){4}(?::C){1,3}", "(?:C:){5}(?::C){1,2}", "(?:C:){6}(?::C)",
    ":(?::C){1,6}", "C?::", "(?:0:){6}(?:C\\.){3}C", "::(?:ffff:)?(?:C\\.){3}C",
    "(?:0:){5}ffff:(?:C\\.){3}C",
)


@functools.cache
def _ipv6() -> re.Pattern:
    """Compiled on first use: ~10 ms, and a host name or IPv4 address never needs it."""
    return re.compile("^(" + "|".join(f.replace("C", _IPV6_PART) for f in _IPV6_FORMS) + ")$",
                      re.IGNORECASE)


_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.IGNORECASE)


def parse_address(address: str) -> tuple[str, int | None] | None:
    """``(host, port)`` if `address` is a host name or IP (ranges allowed) with an optional
    ``:port`` (``[host]:port`` for IPv6), else None. Same grammar as Ansible's parse_address."""
    port = None
    for rx in (_BRACKETED_HOSTPORT, _HOSTPORT):  # Ansible tries both, in this order
        m = rx.match(address)
        if m:
            address, port = m.group(1), int(m.group(2))
    if _HOSTNAME.match(address) or _IPV4.match(address) or _ipv6().match(address):
        return address, port
    return None


# -- splitting a pattern into terms ---------------------------------------------------------------

# One ':'-separated term: anything but whitespace, ':' and brackets, or a whole [...] expression.
_COLON_TERM = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
_BALANCED = re.compile(r"(?:[^\[\]]|\[[^\]]*\])*")
# Ansible's subscript: a single (possibly negative) index, or start:end / start: (inclusive).
_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$")
# What looks like an attempt at a subscript: digits, ':' and '-' between trailing brackets.
_SUBSCRIPT_LIKE = re.compile(r"^(.+)\[([-0-9:]*)\]$")


def _malformed(pattern: str, why: str) -> InputError:
    return InputError(
        f"malformed host pattern {pattern!r}: {why}",
        hint="terms are separated by ',' (or ':'); prefix with & to intersect, ! to exclude; "
             "subscripts are [N], [-N], [N:M] or [N:]",
    )


def split_pattern(pattern: str) -> list[str]:
    """The terms of `pattern`, split the way Ansible splits them (``split_host_pattern``).

    With a comma anywhere, only commas separate terms (so ``a:b,c`` is the two terms ``a:b``
    and ``c``, as in Ansible). Without one, a pattern that is a valid address is a single
    term; otherwise ``:`` and whitespace separate terms. Raises InputError for an empty term
    or an unbalanced bracket, which Ansible would silently drop.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise InputError("empty host pattern", hint="give a group, a host name or 'all'")

    if "," in pattern:
        terms = [t.strip() for t in pattern.split(",")]
        if not all(terms):
            raise _malformed(pattern, "empty term between commas")
    elif parse_address(pattern) is not None:
        terms = [pattern.strip()]
    else:
        terms, gaps, end = [], [], 0
        for m in _COLON_TERM.finditer(pattern):
            gaps.append(pattern[end:m.start()])
            terms.append(m.group())
            end = m.end()
        gaps.append(pattern[end:])
        for i, gap in enumerate(gaps):
            if gap.strip(" \t\n:"):
                raise _malformed(pattern, f"unexpected {gap.strip()!r} (unbalanced bracket?)")
            colons = gap.count(":")
            if colons > 1 or (colons and i in (0, len(gaps) - 1)):
                raise _malformed(pattern, "empty term between colons")

    for term in terms:
        _check_term(pattern, term)
    return terms


def _check_term(pattern: str, term: str) -> None:
    body = term[1:] if term[0] in "&!" else term
    if not body:
        raise _malformed(pattern, f"{term!r} has nothing after the {term[0]!r}")
    if body[0] in "&!":
        raise _malformed(pattern, f"{term!r} combines & and !; use one prefix per term")
    if body[0] == "~":
        if len(body) == 1:
            raise _malformed(pattern, "'~' must be followed by a regular expression")
        return  # brackets belong to the regex; compiled (and checked) when matched
    if not _BALANCED.fullmatch(body):
        raise _malformed(pattern, f"unbalanced bracket in {term!r}")
    if _SUBSCRIPT_LIKE.match(body) and not _SUBSCRIPT.match(body):
        raise _malformed(pattern, f"bad subscript in {term!r}")


def _order_terms(terms: list[str]) -> list[str]:
    """Plain terms first, then intersections, then exclusions (Ansible's order_patterns)."""
    plain = [t for t in terms if t[0] not in "&!"]
    inter = [t for t in terms if t[0] == "&"]
    excl = [t for t in terms if t[0] == "!"]
    return (plain or ["all"]) + inter + excl


# -- matching -------------------------------------------------------------------------------------

def _matcher(pattern: str, term: str) -> Callable[[str], object]:
    try:
        if term[0] == "~":
            return re.compile(term[1:]).match  # anchored at the start only, as in Ansible
        return re.compile(fnmatch.translate(term)).match  # case-sensitive, whole name
    except re.error as e:
        raise _malformed(pattern, f"invalid regular expression {term!r}: {e}") from None


def _split_subscript(term: str) -> tuple[str, tuple[int, int | None] | None]:
    if term[0] == "~":
        return term, None  # a regex keeps its brackets
    m = _SUBSCRIPT.match(term)
    if not m:
        return term, None
    expr, idx, start, _sep, end = m.groups()
    if idx:
        return expr, (int(idx), None)
    return expr, (int(start), int(end) if end else -1)


def _apply_subscript(pattern: str, term: str, hosts: list[str],
                     subscript: tuple[int, int | None] | None) -> list[str]:
    if not hosts or not subscript:
        return hosts
    start, end = subscript
    if end:  # x:y is inclusive; x: (end -1) runs to the last host; x:0 falls through to [x]
        return hosts[start:(len(hosts) - 1 if end == -1 else end) + 1]
    try:
        return [hosts[start]]
    except IndexError:
        raise InputError(
            f"host pattern {pattern!r}: subscript in {term!r} is out of range "
            f"({len(hosts)} host{'s' if len(hosts) != 1 else ''} matched before it)",
            hint="subscripts count from 0; [-1] is the last host",
        ) from None


def _enumerate(pattern: str, expr: str, hosts: Sequence[str],
               groups: Mapping[str, Sequence[str]]) -> list[str]:
    """Hosts of every group whose name matches `expr`, then (if no group matched, or `expr` is a
    regex or has glob characters or a dot) hosts whose name matches. May hold duplicates, which
    Ansible keeps until after the subscript is applied."""
    match = _matcher(pattern, expr)
    matched_groups = [g for g in groups if match(g)]
    results = [h for g in matched_groups for h in groups[g]]
    if not matched_groups or expr[0] == "~" or any(c in expr for c in ".?*["):
        results.extend(h for h in hosts if match(h))
    return results


def select_hosts(pattern: str, hosts: Sequence[str], groups: Mapping[str, Sequence[str]],
                 *, strict: bool = False) -> list[str]:
    """Host names matching `pattern`, in the order Ansible returns them.

    `hosts` are all host names in inventory order; `groups` maps every group name, in the order
    the groups were created (``all`` and ``ungrouped`` first), to the hosts of the group and its
    descendants in Ansible's order. With `strict`, a term that matches nothing is an error too
    (Ansible only warns: "Could not match supplied host pattern, ignoring").
    """
    host_set = set(hosts)
    known = ", ".join(sorted(groups)) or "(none)"
    selected: list[str] = []
    cache: dict[str, list[str]] = {}
    for term in _order_terms(split_pattern(pattern)):
        if term in host_set:  # a plain host name wins over a group of the same name
            selected.append(term)
            continue
        body = term[1:] if term[0] in "&!" else term
        if body not in cache:
            expr, subscript = _split_subscript(body)
            found = _enumerate(pattern, expr, hosts, groups)
            if strict and not found:
                raise InputError(f"host pattern {pattern!r}: term {term!r} matched no hosts",
                                 hint=f"known groups: {known}")
            cache[body] = _apply_subscript(pattern, term, found, subscript)
        found = cache[body]
        if term[0] == "!":
            drop = set(found)
            selected = [h for h in selected if h not in drop]
        elif term[0] == "&":
            keep = set(found)
            selected = [h for h in selected if h in keep]
        else:
            seen = set(selected)
            selected.extend(h for h in found if h not in seen)
    result = list(dict.fromkeys(selected))
    if not result:
        close = difflib.get_close_matches(pattern, [*groups, *hosts], n=3, cutoff=0.6)
        raise InputError(f"host pattern {pattern!r} matched no hosts"
                         + (f" (did you mean {', '.join(close)}?)" if close else ""),
                         hint=f"known groups: {known}")
    return result
