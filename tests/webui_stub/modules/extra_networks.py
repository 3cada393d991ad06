"""Stand-in for A1111 ``modules/extra_networks.py`` (written for this project, not copied).

Behaviour reproduced, because the extension and the Lora stand-in depend on it:
- ``parse_prompts(prompts)`` strips every ``<kind:arg1:arg2...>`` tag from every prompt and returns
  ``(stripped_prompts, {kind: [ExtraNetworkParams, ...]})`` built from the *first* prompt only.
- ``activate(p, data)`` hands each registered network its params — ``[]`` when the prompt does not
  mention it, which is how an earlier LoRA gets switched off — then runs the scripts'
  ``after_extra_networks_activate``. ``deactivate(p, data)`` calls every registered network's
  ``deactivate``. A failing network is reported through ``errors.display``; nothing is raised.
Left out: aliases, ``initialize``, the UI pages, unknown-kind logging.
"""
import re

from modules import errors

extra_network_registry = {}

_TAG = re.compile(r"<(\w+):([^>]+)>")


class ExtraNetworkParams:
    """The ``:``-separated arguments of one tag; ``key=value`` ones are also exposed in ``named``."""

    def __init__(self, items=None):
        self.items = list(items) if items else []
        self.named = {}
        self.positional = []
        for item in self.items:
            key, sep, value = item.partition("=") if isinstance(item, str) else (item, "", None)
            if sep and "=" not in value:
                self.named[key] = value
            else:
                self.positional.append(item)

    def __eq__(self, other):
        return isinstance(other, ExtraNetworkParams) and other.items == self.items

    def __repr__(self):
        return f"ExtraNetworkParams({self.items!r})"


class ExtraNetwork:
    """Base class: subclasses implement ``activate(p, params_list)`` and ``deactivate(p)``."""

    def __init__(self, name):
        self.name = name

    def activate(self, p, params_list):
        raise NotImplementedError

    def deactivate(self, p):
        raise NotImplementedError


def register_extra_network(extra_network):
    extra_network_registry[extra_network.name] = extra_network


def _guarded(what, call, *args):
    try:
        call(*args)
    except Exception as e:  # noqa: BLE001 - the WebUI reports a broken network and carries on
        errors.display(e, what)


def activate(p, extra_network_data):
    for kind, network in extra_network_registry.items():
        params_list = list(extra_network_data.get(kind, []))
        _guarded(f"activating extra network {kind} with arguments {params_list}", network.activate, p, params_list)
    if p.scripts is not None:
        p.scripts.after_extra_networks_activate(p, batch_number=p.iteration, prompts=p.prompts, seeds=p.seeds,
                                                subseeds=p.subseeds, extra_network_data=extra_network_data)


def deactivate(p, extra_network_data):
    for kind, network in extra_network_registry.items():
        _guarded(f"deactivating extra network {kind}", network.deactivate, p)


def parse_prompt(prompt):
    """``(prompt without tags, {kind: [ExtraNetworkParams, ...]})`` for one prompt."""
    found = {}
    for match in _TAG.finditer(prompt):
        found.setdefault(match.group(1), []).append(ExtraNetworkParams(match.group(2).split(":")))
    return _TAG.sub("", prompt), found


def parse_prompts(prompts):
    stripped = [parse_prompt(prompt)[0] for prompt in prompts]
    first_tags = parse_prompt(prompts[0])[1] if prompts else {}
    return stripped, first_tags
