"""The WebUI glue of Signal Leak Bias, split by concern (imported by ``scripts/``).

- :mod:`.host`: the host adapter (A1111 and Forge): every lookup into WebUI objects.
- :mod:`.presets`: the preset list of the extension's ``stats/`` and the user folder.
- :mod:`.ui`: the accordion and the Preview button.
- :mod:`.fit_panel`: fitting with the loaded model's VAE (UI button and API route).
- :mod:`.hooks`: what each generation does (infotext, txt2img start, img2img LF swap).
- :mod:`.xyz`: X/Y/Z plot axes. :mod:`.routes`: ``/signal-leak/v1/``. :mod:`.options`:
  the Settings entries.

The maths and parsing live in ``slb`` (no WebUI import there).
"""
