"""A stand-in for the slice of gradio's API the extension's UI code uses (gradio is not installed in CI).

Components keep their constructor arguments and ``value``; layout blocks are context managers;
event listeners record their wiring. Enough to build ``Script.ui()`` and read default values,
which is what the WebUI's API does with a script's UI; the real rendering is checked by hand.
"""


class Block:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        self.listeners = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def _listen(self, event, fn=None, inputs=None, outputs=None, **kwargs):
        self.listeners.append((event, fn, inputs, outputs, kwargs))
        return self

    def click(self, *args, **kwargs):
        return self._listen("click", *args, **kwargs)

    def change(self, *args, **kwargs):
        return self._listen("change", *args, **kwargs)

    def then(self, *args, **kwargs):
        return self._listen("then", *args, **kwargs)


def _component(name, positional=("value",), default=None):
    def __init__(self, *args, **kwargs):
        Block.__init__(self, *args, **kwargs)
        named = dict(zip(positional, args))
        named.update(kwargs)
        self.value = named.get("value", default)
        self.label = named.get("label")
        self.choices = named.get("choices")
    return type(name, (Block,), {"__init__": __init__})


Slider = _component("Slider", ("minimum", "maximum", "value"))
Textbox = _component("Textbox", default="")
Dropdown = _component("Dropdown", ("choices", "value"))
Checkbox = _component("Checkbox", default=False)
CheckboxGroup = _component("CheckboxGroup", ("choices", "value"), default=[])
Radio = _component("Radio", ("choices", "value"))
Number = _component("Number")
Button = _component("Button", default="Run")
Video = _component("Video")
Gallery = _component("Gallery")
HTML = _component("HTML", default="")
Markdown = _component("Markdown", default="")
State = _component("State")
Row = Column = Group = Tab = Tabs = Accordion = Blocks = Block


def update(**kwargs):
    return {"__type__": "update", **kwargs}
