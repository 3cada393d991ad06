"""Stand-in for A1111 ``modules/options.py`` (``OptionInfo``; ``Options``, the class of ``shared.opts``),
written for these tests.

Behaviour kept: reading ``opts.<key>`` gives the stored value, else the registered default; assigning
to a registered key stores the value in ``opts.data``; ``add_option`` registers a setting and stores its
default; ``set(key, value, is_api, run_callbacks)`` answers whether the value changed, refuses API writes
of ``restrict_api`` settings and runs the setting's ``onchange`` (an exception there is reported through
``errors.display`` and the old value comes back); ``get_default``.
Left out: the settings file, freezing, categories, type checks, ``Options.onchange`` and the
UI-description helpers of ``OptionInfo`` (``info``, ``link``, ``needs_reload_ui``, ...).
"""


class OptionInfo:
    """A setting's default plus its UI description (only stored: the stand-in builds no settings page)."""

    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False, category_id=None):
        self.default, self.label, self.onchange = default, label, onchange
        self.component, self.component_args, self.refresh = component, component_args, refresh
        self.section, self.category_id = section, category_id
        self.comment_before, self.comment_after = comment_before, comment_after
        self.infotext, self.restrict_api = infotext, restrict_api


def options_section(section_identifier, options_dict):
    """Put every ``OptionInfo`` of ``options_dict`` into the section ``(id, title[, category])``."""
    section, category = tuple(section_identifier[:2]), tuple(section_identifier[2:3])
    for info in options_dict.values():
        info.section = section
        if category:
            info.category_id = category[0]
    return options_dict


class Options:
    """Settings as attributes: ``data`` holds the values, ``data_labels`` the registered ``OptionInfo``s."""

    def __init__(self, data_labels: dict, restricted_opts=()):
        object.__setattr__(self, "data_labels", data_labels)
        object.__setattr__(self, "data", {key: info.default for key, info in data_labels.items()})
        object.__setattr__(self, "restricted_opts", set(restricted_opts))

    def __getattr__(self, name):  # only reached for names that are not ordinary attributes
        own = self.__dict__
        if name in own.get("data", ()):
            return own["data"][name]
        if name in own.get("data_labels", ()):
            return own["data_labels"][name].default
        raise AttributeError(f"no setting or attribute {name!r}")

    def __setattr__(self, name, value):
        if name in self.data or name in self.data_labels:
            self.data[name] = value
        else:
            object.__setattr__(self, name, value)

    def set(self, key, value, is_api=False, run_callbacks=True):
        """Store ``value`` for ``key``; False when nothing changed or the write was refused or undone."""
        before = self.data.get(key)
        info = self.data_labels[key]
        if before == value or (is_api and info.restrict_api):
            return False
        self.data[key] = value
        if not run_callbacks or info.onchange is None:
            return True
        try:
            info.onchange()
        except Exception as e:
            from modules import errors
            errors.display(e, f"changing setting {key} to {value}")
            self.data[key] = before
            return False
        return True

    def get_default(self, key):
        info = self.data_labels.get(key)
        return info.default if info is not None else None

    def add_option(self, key, info):
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)
