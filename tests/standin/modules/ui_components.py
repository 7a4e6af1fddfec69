"""Stand-in for A1111 ``modules/ui_components.py`` (ToolButton 12-21, Form* 34-72,
InputAccordion 88-144) on whichever gradio the stand-in uses; re-import after switching.

``InputAccordion`` is, as in A1111, a ``gr.Checkbox`` SUBCLASS: a hidden checkbox whose bool
value is the open state of the accordion it owns (``.accordion``); as a context manager it
enters that accordion; ``.extra()`` gives a column for widgets in the accordion header.
"""

from modules.standin_gradio import gradio

gr = gradio()


class FormComponent:
    """Marker: A1111 lets these sit directly inside a gradio Form."""

    def get_expected_parent(self):
        return getattr(getattr(gr, "components", None), "Form", None)


# Written as class statements: gradio 4 (Forge's pin) reads each component class's source
# when the class is created.
class FormRow(FormComponent, gr.Row):
    def get_block_name(self):
        return "row"


class FormColumn(FormComponent, gr.Column):
    def get_block_name(self):
        return "column"


class FormGroup(FormComponent, gr.Group):
    def get_block_name(self):
        return "group"


class FormHTML(FormComponent, gr.HTML):
    def get_block_name(self):
        return "html"


class ToolButton(FormComponent, gr.Button):
    def __init__(self, *args, **kwargs):
        classes = ["tool", *kwargs.pop("elem_classes", [])]
        super().__init__(*args, elem_classes=classes, **kwargs)

    def get_block_name(self):
        return "button"


class InputAccordion(gr.Checkbox):
    global_index = 0

    def __init__(self, value, **kwargs):
        own_id = kwargs.get("elem_id")
        if own_id is None:
            own_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1
        self.accordion_id = own_id
        super().__init__(value, **{**kwargs, "elem_id": f"{own_id}-checkbox", "visible": False})
        # gradio 3 (A1111) names the client-side handler _js, gradio 4 (Forge) js
        js_key = "_js" if str(getattr(gr, "__version__", "3")).startswith("3") else "js"
        self.change(fn=None, inputs=[self], **{
            js_key: f'function(c){{ inputAccordionChecked("{own_id}", c); }}'})
        self.accordion = gr.Accordion(**{**kwargs, "elem_id": own_id, "open": value,
                                         "label": kwargs.get("label", "Accordion"),
                                         "elem_classes": ["input-accordion"]})

    def extra(self):
        return gr.Column(elem_id=f"{self.accordion_id}-extra",
                         elem_classes="input-accordion-extra", min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, *exc):
        self.accordion.__exit__(*exc)

    def get_block_name(self):
        return "checkbox"
