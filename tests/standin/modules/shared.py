"""Stand-in for A1111 ``modules/shared.py`` and what it re-exports: ``OptionInfo`` and
``opts`` (options.py:13-259: values in ``opts.data``, attribute reads fall back to registered
defaults, ``add_option`` keeps a stored value; built-in keys in ``DEFAULT_OPTIONS`` with
A1111's defaults), ``state`` (shared_state.py), ``cmd_opts``, ``sd_model``, ``device``.
"""

import copy
import time
import types

from modules import devices

device = devices.device
sd_model = demo = None
latent_upscale_default_mode = "Latent"  # shared.py:90-95 (subset)
latent_upscale_modes = {label: {"mode": mode, "antialias": False} for label, mode in
                        (("Latent", "bilinear"), ("Latent (nearest)", "nearest"))}


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None,
                 onchange=None, section=None, refresh=None, comment_before="", comment_after="",
                 infotext=None, restrict_api=False, category_id=None):
        given = dict(locals())
        del given["self"]
        vars(self).update(given, do_not_save=False)

    def _after(self, text):
        self.comment_after += text
        return self

    def info(self, info):
        return self._after(f"<span class='info'>({info})</span>")

    def needs_restart(self):
        return self._after(" <span class='info'>(requires restart)</span>")

    def needs_reload_ui(self):
        return self._after(" <span class='info'>(requires Reload UI)</span>")

    def link(self, label, url):
        return self._before(f"[<a href='{url}' target='_blank'>{label}</a>]")

    def _before(self, text):
        self.comment_before += text
        return self


DEFAULT_OPTIONS = {
    # sampler parameters (shared_options.py:389-406)
    "sgm_noise_multiplier": False, "sigma_min": 0.0, "sigma_max": 0.0, "rho": 0.0,
    "eta_noise_seed_delta": 0, "always_discard_next_to_last_sigma": False,
    "use_old_karras_scheduler_sigmas": False, "eta_ddim": 0.0, "eta_ancestral": 1.0,
    "s_churn": 0.0, "s_tmin": 0.0, "s_tmax": 0.0, "s_noise": 1.0, "s_min_uncond": 0.0,
    "sd_noise_schedule": "Default", "use_downcasted_alpha_bar": False,
    # generation (181-255)
    "randn_source": "GPU", "CLIP_stop_at_last_layers": 1, "initial_noise_multiplier": 1.0,
    "img2img_extra_noise": 0.0, "img2img_fix_steps": False, "inpainting_mask_weight": 1.0,
    "sd_vae_encode_method": "Full", "sd_vae_decode_method": "Full", "sd_vae": "Automatic",
    "sd_model_checkpoint": None, "face_restoration": False, "tiling": False,
    # output and infotext (307-362), live preview (378)
    "return_grid": True, "grid_only_if_multiple": True, "enable_pnginfo": True,
    "add_model_hash_to_info": True, "add_model_name_to_info": True,
    "add_vae_hash_to_info": True, "add_vae_name_to_info": True,
    "add_version_to_infotext": True, "add_user_name_to_info": False,
    "infotext_skip_pasting": [], "samples_format": "png", "show_progress_type": "Approx NN",
    "live_previews_enable": True, "multiple_tqdm": True,
}


class Options:
    def __init__(self):
        labels = {k: OptionInfo(v) for k, v in DEFAULT_OPTIONS.items()}
        object.__setattr__(self, "data_labels", labels)
        object.__setattr__(self, "data", {k: copy.deepcopy(v) for k, v in
                                          DEFAULT_OPTIONS.items()})

    def __getattr__(self, key):
        if key in ("data", "data_labels"):
            raise AttributeError(key)
        if key in self.data:
            return self.data[key]
        if key in self.data_labels:
            return self.data_labels[key].default
        raise AttributeError(f"'Options' object has no attribute '{key}'")

    def __setattr__(self, key, value):
        if key in self.data_labels or key in self.data:
            self.data[key] = value
        else:
            object.__setattr__(self, key, value)

    def add_option(self, key, info):
        self.data_labels[key] = info
        if not info.do_not_save:
            self.data.setdefault(key, info.default)  # a stored value wins

    def get_default(self, key):
        return getattr(self.data_labels.get(key), "default", None)

    def set(self, key, value, is_api=False, run_callbacks=True):
        changed, self.data[key] = self.data.get(key) != value, value
        onchange = getattr(self.data_labels.get(key), "onchange", None)
        if changed and run_callbacks and onchange is not None:
            onchange()
        return changed

    def save(self, filename=None):
        """Settings live in memory only."""


class State:
    """Job counters and the interrupt/skip flags a long action polls."""

    FRESH = {"skipped": False, "interrupted": False, "stopping_generation": False,
             "job_no": 0, "job_count": -1, "sampling_step": 0, "sampling_steps": 0,
             "processing_has_refined_job_count": False, "job_timestamp": "0",
             "current_latent": None, "current_image": None, "textinfo": None}

    def __init__(self):
        vars(self).update(self.FRESH, job="", job_count=0, time_start=None,
                          server_start=time.time())

    def begin(self, job="(unknown)"):
        vars(self).update(self.FRESH, job=job, time_start=time.time(),
                          job_timestamp=time.strftime("%Y%m%d%H%M%S"))

    def end(self):
        self.job, self.job_count = "", 0

    def interrupt(self):
        self.interrupted = True

    def skip(self):
        self.skipped = True

    def nextjob(self):
        self.job_no, self.sampling_step = self.job_no + 1, 0


def _fresh_cmd_opts():
    flags = ("api", "nowebui", "no_half", "no_half_vae", "lowvram", "medvram", "skip_install",
             "hide_ui_dir_config", "no_prompt_history", "no_gradio_queue", "listen")
    return dict(dict.fromkeys(flags, False), data_dir="", models_dir=None, port=None)


opts, state = Options(), State()
cmd_opts = types.SimpleNamespace(**_fresh_cmd_opts())


def reset():
    """Stand-in only: fresh opts/state/cmd_opts, changed in place so imports stay valid."""
    vars(opts).clear()
    Options.__init__(opts)
    vars(state).clear()
    State.__init__(state)
    vars(cmd_opts).clear()
    vars(cmd_opts).update(_fresh_cmd_opts())
