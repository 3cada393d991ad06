"""Light stand-ins for A1111 ``modules/ui_components.py`` widgets, without Gradio.

``InputAccordion(value, **kwargs)`` keeps ``value`` (True = open = enabled), ``label``, ``elem_id``,
``accordion_id``; it is a context manager and has ``extra()``, like the real one. Nothing is drawn.
"""
import contextlib


class _Component:
    def __init__(self, value=None, **kwargs):
        self.value = value
        self.label = kwargs.get("label")
        self.elem_id = kwargs.get("elem_id")
        self.kwargs = kwargs

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class InputAccordion(_Component):
    global_index = 0

    def __init__(self, value, **kwargs):
        super().__init__(value, **kwargs)
        self.accordion_id = kwargs.get("elem_id")
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1
        self.elem_id = f"{self.accordion_id}-checkbox"
        self.label = kwargs.get("label", "Accordion")
        self.open = value

    def extra(self):
        return contextlib.nullcontext()


class FormRow(_Component):
    pass


class FormColumn(_Component):
    pass


class FormGroup(_Component):
    pass


class ToolButton(_Component):
    pass
