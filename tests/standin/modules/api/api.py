"""Stand-in for the script-args part of A1111 ``modules/api/api.py`` (36-40, 315-361) and
``api/models.py`` (307-320). Default args: Nones, ``[0] = 0``, then inside ``gr.Blocks()`` each
script's ``ui()`` is called a SECOND time and the controls' values copied into its slice;
``alwayson_scripts`` entries must name an always-on script (else HTTP 422) and overwrite the
defaults positionally, at most ``args_to - args_from``. No ``/sdapi`` routes.
"""

from modules.standin_gradio import gradio

try:
    from fastapi import HTTPException
except ImportError:  # the dev environment has no fastapi
    class HTTPException(Exception):
        def __init__(self, status_code, detail=None):
            super().__init__(f"{status_code}: {detail}")
            self.status_code, self.detail = status_code, detail


class _Record:
    FIELDS = ()

    def __init__(self, **values):
        vars(self).update({key: values.pop(key, None) for key in self.FIELDS})
        if values:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(values)}")

    def dict(self):
        plain = {key: getattr(self, key) for key in self.FIELDS}
        if isinstance(plain.get("args"), list):
            plain["args"] = [arg.dict() for arg in plain["args"]]
        return plain


class ScriptArg(_Record):
    FIELDS = ("label", "value", "minimum", "maximum", "step", "choices")


class ScriptInfo(_Record):
    FIELDS = ("name", "is_alwayson", "is_img2img", "args")


def script_name_to_index(name, script_list):
    titles = [s.title().lower() for s in script_list]
    if name.lower() not in titles:
        raise HTTPException(status_code=422, detail=f"Script '{name}' not found")
    return titles.index(name.lower())


def init_default_script_args(script_runner):
    args = [None] * max([1] + [s.args_to or 0 for s in script_runner.scripts])
    args[0] = 0
    with gradio().Blocks():
        for script in list(script_runner.scripts):
            if script.ui(script.is_img2img):
                fresh = script.ui(script.is_img2img)
                args[script.args_from:script.args_to] = [control.value for control in fresh]
    return args


def init_script_args(default_script_args, script_runner, *, alwayson_scripts=None):
    args = list(default_script_args)
    for name, request in (alwayson_scripts or {}).items():
        script = script_runner.scripts[script_name_to_index(name, script_runner.scripts)]
        if not script.alwayson:
            raise HTTPException(status_code=422, detail="Cannot have a selectable script in "
                                "the always on scripts params")
        for i, value in enumerate(request.get("args", [])[:script.args_to - script.args_from]):
            args[script.args_from + i] = value
    return args

