"""Playbook values as Ansible evaluates them: native types, StrictUndefined, lookups, redaction."""

import jinja2
import pytest

from ripcord.templating import REDACTED, Secrets, Templar


def test_a_lone_expression_keeps_its_type_and_text_is_text():
    templar = Templar()
    assert templar.render("{{ ports }}", {"ports": [1, 2]}) == [1, 2]
    assert templar.render("{{ n + 1 }}", {"n": 41}) == 42
    assert templar.render("port {{ n }}", {"n": 41}) == "port 41"
    assert templar.render({"a": ["{{ x }}"]}, {"x": True}) == {"a": [True]}


def test_undefined_is_an_error_never_an_empty_string():
    with pytest.raises(jinja2.UndefinedError):
        Templar().render("{{ missing }}/x", {})


def test_conditions_read_as_when_does():
    templar = Templar()
    assert templar.truth("a == 1 and b", {"a": 1, "b": "yes"})
    assert not templar.truth("{{ a }}", {"a": "no"})
    assert templar.truth(True, {})
    assert templar.truth("r is failed", {"r": {"failed": True}})
    assert templar.truth("r is changed", {"r": {"changed": True}})


def test_filters_operators_need():
    templar = Templar()
    assert templar.render("{{ p | quote }}", {"p": "a b;c"}) == "'a b;c'"
    assert templar.render("{{ 'x' | b64encode | b64decode }}", {}) == "x"
    assert templar.render("{{ 'v1.4.2' | regex_search('[0-9.]+') }}", {}) == "1.4.2"


def test_lookup_values_are_secrets_and_get_redacted(monkeypatch, tmp_path):
    monkeypatch.setenv("RIPCORD_UNIT_TOKEN", "t0ken-value")
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nDB_PASSWORD='pa55word'\nexport OTHER=1\n")
    secrets = Secrets()
    templar = Templar(secrets)
    text = templar.render("{{ lookup('env', 'RIPCORD_UNIT_TOKEN') }}:"
                          f"{{{{ lookup('dotenv', 'DB_PASSWORD', file='{dotenv}') }}}}", {})
    assert text == "t0ken-value:pa55word"
    assert secrets.redact({"msg": f"got {text}", "list": ["pa55word"]}) == {
        "msg": f"got {REDACTED}:{REDACTED}", "list": [REDACTED]}


def test_lookup_errors_are_clear(tmp_path):
    templar = Templar()
    with pytest.raises(jinja2.UndefinedError, match="RIPCORD_UNSET_VAR is not set"):
        templar.render("{{ lookup('env', 'RIPCORD_UNSET_VAR') }}", {})
    with pytest.raises(jinja2.UndefinedError, match="unknown lookup"):
        templar.render("{{ lookup('vault', 'x') }}", {})
    with pytest.raises(jinja2.UndefinedError, match="cannot read"):
        templar.render(f"{{{{ lookup('dotenv', 'K', file='{tmp_path}/none') }}}}", {})


def test_names_used_are_top_level_names_only():
    templar = Templar()
    assert templar.names_used("{{ a.b }} {{ c | default(d) }}") == {"a", "c", "d"}
    assert templar.names_used("x == y", bare=True) == {"x", "y"}
    assert templar.names_used("no template here") == set()


# --- data is never code (issues 13 and 15) ----------------------------------------------------

def test_unsafe_text_is_returned_as_it_is_never_rendered():
    from ripcord.unsafe import Unsafe

    templar = Templar()
    assert templar.render(Unsafe("{{ 7*7 }}"), {}) == "{{ 7*7 }}"
    assert templar.render({"a": [Unsafe("{% if x %}")]}, {}) == {"a": ["{% if x %}"]}
    assert templar.render("{{ v }}", {"v": Unsafe("{{ 7*7 }}")}) == "{{ 7*7 }}"
    assert not templar.truth(Unsafe("{{ true }}"), {})  # text, as Ansible's bool reads it
    assert templar.truth("{{ true }}", {})


def test_a_variable_is_rendered_once_and_its_output_never_again():
    from ripcord.templating import resolve_vars
    from ripcord.unsafe import Unsafe

    out = resolve_vars(Templar(), {"said": Unsafe("{{ 7*7 }}"), "msg": "host said {{ said }}",
                                   "lit": "{{ '{{' }} 6*7 {{ '}}' }}", "use": "{{ lit }}",
                                   "chain": "{{ home }}/x", "home": "{{ base }}/h", "base": "/b"})
    assert out["msg"] == "host said {{ 7*7 }}"
    assert out["lit"] == "{{ 6*7 }}" and out["use"] == "{{ 6*7 }}"  # never rendered a second time
    assert out["chain"] == "/b/h/x"


def test_variables_that_refer_to_each_other_are_undefined_only_where_used():
    from ripcord.templating import resolve_vars

    out = resolve_vars(Templar(), {"a": "{{ b }}", "b": "{{ a }}", "c": "{{ d", "ok": "{{ 1 }}"})
    assert out["ok"] == 1
    for name in ("a", "b", "c"):
        with pytest.raises(jinja2.UndefinedError):
            str(out[name])


def test_templates_cannot_reach_python_internals():
    templar = Templar()
    for source in ("{{ ''.__class__.__mro__ }}", "{{ lipsum.__globals__ }}",
                   "{{ (lipsum | attr('__globals__')) }}", "{{ cycler.__init__.__globals__ }}"):
        with pytest.raises(jinja2.exceptions.SecurityError):
            templar.render(source, {})
    with pytest.raises(jinja2.exceptions.SecurityError):  # immutable: no mutation of what it gets
        templar.render("{{ xs.append(1) }}", {"xs": []})


def test_secrets_of_any_length_are_redacted():
    secrets = Secrets()
    for value in ("x9", "abc", 4242):
        secrets.add(value)
    assert secrets.redact("k=x9 v=abc n=4242") == f"k={REDACTED} v={REDACTED} n={REDACTED}"
    secrets.add("")
    assert secrets.redact("unchanged") == "unchanged"
