"""Stand-in for A1111 ``modules/infotext_utils.py``: reading and pasting infotext.

``PasteField`` (34-44); ``quote`` (56-60): values with ``,``/``:``/newline are JSON-quoted;
``parse_generation_parameters`` (234-382): prompt, ``Negative prompt:``, then a last line of
3+ ``key: value`` pairs, quoted values decoded, ``WxH`` -> ``key-1``/``key-2``, defaults for
absent keys (subset). ``paste_infotext`` = the paste button of ``connect_paste`` (476-545):
``on_infotext_pasted`` first; a missing/None value -> no change; else converted by the type of
the component's CURRENT value: bool -> ``"False"`` is False, else ``bool(v)``; int ->
``float(v)``; else ``type(v)``; a failed conversion -> no change.
"""

import json

from modules import errors, script_callbacks, shared

ABSENT_DEFAULTS = {"Clip skip": "1", "Hires sampler": "Use same sampler", "RNG": "GPU",
                   "Mask mode": "Inpaint masked", "Masked content": "original",
                   "Schedule type": "Automatic", "Schedule max sigma": 0,
                   "Schedule min sigma": 0, "Schedule rho": 0, "VAE Encoder": "Full"}
NO_CHANGE = {"__type__": "update"}


class PasteField(tuple):
    """``(component, target)`` plus ``component``/``label``/``function``/``api`` fields."""

    def __new__(cls, component, target, *, api=None):
        pair = tuple.__new__(cls, (component, target))
        pair.component, pair.api = component, api
        pair.label = target if isinstance(target, str) else None
        pair.function = None if isinstance(target, str) or not callable(target) else target
        return pair


def quote(text):
    needs_quotes = any(ch in str(text) for ch in ",:\n")
    return json.dumps(text, ensure_ascii=False) if needs_quotes else text


def unquote(text):
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def split_params(line):
    """The ``key: value`` pairs of a parameter line (quoted values kept quoted)."""
    pairs, pos, size = [], 0, len(line)
    while pos < size and ":" in line[pos:]:
        colon = line.index(":", pos)
        key, start = line[pos:colon].strip(), colon + 1
        while start < size and line[start] == " ":
            start += 1
        stop = start
        if line.startswith('"', start):
            stop += 1
            while stop < size and line[stop] != '"':
                stop += 2 if line[stop] == "\\" else 1
        comma = line.find(",", stop)
        value = line[start:] if comma < 0 else line[start:comma]
        if len(key) > 1 and (key[0].isalnum() or key[0] == "_") and \
                all(ch.isalnum() or ch in "_ -/" for ch in key):
            pairs.append((key, value.strip()))
        pos = size if comma < 0 else comma + 1
    return pairs


def parse_generation_parameters(x, skip_fields=None):
    lines = x.strip().split("\n")
    params = split_params(lines[-1])
    if len(params) >= 3:
        lines.pop()
    else:
        params = []
    res, text, target = {}, {"Prompt": [], "Negative prompt": []}, "Prompt"
    for line in (s.strip() for s in lines):
        head, sep, rest = line.partition("Negative prompt:")
        if sep and not head:
            target, line = "Negative prompt", rest.strip()
        text[target].append(line)
    for key, value in params:
        value = unquote(value)
        width, sep, height = value.partition("x")
        if sep and width.isdigit() and height.isdigit():
            res[f"{key}-1"], res[f"{key}-2"] = width, height
        else:
            res[key] = value
    res.update({key: "\n".join(found) for key, found in text.items()})
    for key, default in ABSENT_DEFAULTS.items():
        res.setdefault(key, default)
    for key in shared.opts.infotext_skip_pasting if skip_fields is None else skip_fields:
        res.pop(key, None)
    return res


def convert_for(component, value):
    if isinstance(value, dict):  # a gr.update(...): the host passes it on as it is
        return value
    current = type(getattr(component, "value", None))
    try:
        if current is bool and value == "False":
            value = False
        else:
            value = float(value) if current is int else current(value)
    except Exception:
        return dict(NO_CHANGE)
    return {"__type__": "update", "value": value}


def paste_values(fields, params):
    """One update per ``(component, key_or_callable)`` field for parsed ``params``."""
    updates = []
    for component, target in fields:
        value = None
        try:
            value = target(params) if callable(target) else params.get(target)
        except Exception:
            errors.report(f"Error executing {target}", exc_info=True)
        updates.append(dict(NO_CHANGE) if value is None else convert_for(component, value))
    return updates


def paste_infotext(fields, infotext):
    params = parse_generation_parameters(infotext)
    script_callbacks.infotext_pasted_callback(infotext, params)
    return paste_values(fields, params)
