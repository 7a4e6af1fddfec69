"""Test probe for the real-host suite: records what the sampler is handed (never shipped).

Linked into the WebUI's ``extensions/`` as ``zz-slb-probe`` (after the Signal Leak Bias
extension in folder-name order, so its hooks run after ours). It does nothing unless a
request names a folder: ``alwayson_scripts: {"slb probe": {"args": ["/some/folder"]}}``.
Then it writes float32 ``.npy`` files there:

- ``init_before_<i>``: img2img's ``p.init_latent`` in ``process_batch`` (after the host
  built it, before any ``process_before_every_sampling``), and ``mask_<i>`` (``p.mask``:
  1 where the image is kept);
- ``noise_<pass>_<i>`` and, for img2img, ``init_after_<i>``: the noise the sampler will be
  handed and the init latent in ``process_before_every_sampling`` (pass ``first`` or
  ``hr``). That noise is the ``noise`` argument, except in WebUI Forge when an earlier
  script set ``p.modified_noise``: Forge then samples from that tensor instead (Forge
  modules/processing.py:1383-1385, 1528-1530, 1861-1863), so the probe saves it. A1111
  has no ``modified_noise``;
- ``samples_<i>``: the latents ``post_sample`` receives (after the host's mask blend);
- ``calls.txt``: one line ``<pass> <i>`` per ``process_before_every_sampling`` call (so a
  test can tell how often the hook ran, e.g. not again at an SDXL refiner switch);

``<i>`` is the batch iteration (``p.iteration``).

At import it also registers the suite's small open-clip model configs with open-clip when
``SLB_TEST_OPEN_CLIP_CONFIGS`` names their folder (``tiny_families.py``): the tiny SDXL and
SD 2.x checkpoints use those architectures, and open-clip builds only the ones it knows.
Scripts load before the WebUI loads its first model (A:modules/initialize.py:111, 156).
"""

import os

import gradio as gr
import numpy as np
import torch
from modules import scripts

if os.environ.get("SLB_TEST_OPEN_CLIP_CONFIGS"):
    import open_clip

    open_clip.add_model_config(os.environ["SLB_TEST_OPEN_CLIP_CONFIGS"])


def _save(folder, name, tensor):
    # Forge runs the hooks under torch.inference_mode: .detach().float().cpu() of an
    # inference tensor still gives a tensor whose .numpy() works.
    if isinstance(tensor, torch.Tensor):
        np.save(os.path.join(folder, name + ".npy"), tensor.detach().float().cpu().numpy())


def _sampler_noise(p, kwargs):
    """What the sampler will start from: Forge's ``p.modified_noise`` when a script set it,
    else the ``noise`` the hook was given."""
    modified = getattr(p, "modified_noise", None)
    return modified if isinstance(modified, torch.Tensor) else kwargs.get("noise")


class SlbProbe(scripts.Script):
    def title(self):
        return "SLB probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Textbox(value="", visible=False)]

    @staticmethod
    def _folder(args):
        folder = args[0] if args else ""
        return folder if isinstance(folder, str) and os.path.isdir(folder) else None

    def process_batch(self, p, *args, **kwargs):
        folder = self._folder(args)
        if folder and self.is_img2img:
            _save(folder, f"init_before_{p.iteration}", getattr(p, "init_latent", None))
            _save(folder, f"mask_{p.iteration}", getattr(p, "mask", None))

    def process_before_every_sampling(self, p, *args, **kwargs):
        folder = self._folder(args)
        if not folder:
            return
        stage = "hr" if getattr(p, "is_hr_pass", False) else "first"
        with open(os.path.join(folder, "calls.txt"), "a", encoding="utf-8") as calls:
            calls.write(f"{stage} {p.iteration}\n")
        _save(folder, f"noise_{stage}_{p.iteration}", _sampler_noise(p, kwargs))
        if self.is_img2img:
            _save(folder, f"init_after_{p.iteration}", getattr(p, "init_latent", None))

    def post_sample(self, p, ps, *args):
        folder = self._folder(args)
        if folder:
            _save(folder, f"samples_{p.iteration}", ps.samples)
