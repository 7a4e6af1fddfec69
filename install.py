"""The WebUI's install hook: the WebUI runs it after *Install from URL* and at every start
(unless --skip-install), in a subprocess of its own interpreter, and prints what it prints.

The WebUI already ships everything this extension imports (torch, numpy, scipy, safetensors,
Pillow, gradio), so normally this installs nothing, and says so in one line of the server
log. If a package is missing (a trimmed or unusual environment) only that package is
installed, with the WebUI's own pip helper, unless the WebUI was started with
--skip-install; torch is never touched: the WebUI manages its own torch build.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

TAG = "[Signal Leak Bias]"
# import name -> pip requirement (loose bounds: never fight the WebUI's own pins)
REQUIREMENTS = {
    "numpy": "numpy",
    "scipy": "scipy>=1.7",
    "safetensors": "safetensors>=0.3",
    "PIL": "Pillow>=9.1",
}


def missing_requirements(find_spec: Callable[[str], object] = importlib.util.find_spec
                         ) -> list[str]:
    """Pip requirements whose module cannot be imported here."""
    out = []
    for module, requirement in REQUIREMENTS.items():
        try:
            found = find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(requirement)
    return out


def main(launch: object = None, find_spec: Callable[[str], object] = importlib.util.find_spec
         ) -> list[str]:
    """Install what is missing through ``launch.run_pip``; returns what was missing."""
    todo = missing_requirements(find_spec)
    if not todo:
        print(f"{TAG} install.py: {', '.join(REQUIREMENTS.values())} present; nothing to install")
        return todo
    if launch is None:
        import launch  # the WebUI's module, on the path when the WebUI runs this file
    if getattr(getattr(launch, "args", None), "skip_install", False):
        print(f"{TAG} install.py: missing {', '.join(todo)}; not installed (--skip-install)")
        return todo
    for requirement in todo:
        launch.run_pip(f'install "{requirement}"', f"{requirement} for Signal Leak Bias")
    return todo


if __name__ == "__main__":
    main()
