"""Stand-in for A1111 ``modules/processing.py`` (line numbers are A1111's; HOST-NOTES 1-4).

``process_images`` (818-1150): ``before_process``; seeds (``all_seeds = seed + i`` only when
``subseed_strength == 0``); ``process``; ``p.init``; per batch a NEW ``p.rng`` ImageRNG,
``before_process_batch``, ``after_extra_networks_activate``, ``process_batch``,
``apply_alpha_schedule_override``, ``p.sample``, ``post_sample``, decode, ``postprocess_batch``
(+ ``_list``), per image ``postprocess_image``...; grid; ``postprocess``. txt2img ``sample``
(1307-1362): sampler made HERE, ``x = rng.next()``, PBES(``x=x, noise=x``), ``sample(x)``;
hires (1364-1464): ``is_hr_pass``, new sampler and ImageRNG, ``before_hr``, PBES(``x=samples,
noise``), ``sample_img2img``. img2img ``init`` (1602-1757) makes the sampler, masks
(``mask``/``nmask`` ``[C, h, w]``) and ``init_latent`` once per job (``devices.dtype_vae``);
``sample`` (1759-1789): ``x *= initial_noise_multiplier`` in place, PBES(``x=p.init_latent,
noise=x``), ``sample_img2img`` reading ``p.init_latent`` AFTER the hooks, final blend.
``create_infotext`` (705-817). Records for tests (``p.standin_records``, ``standin_log``,
``p.standin_pbes_calls``): keys listed in tests/standin/README.md.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from PIL import Image, ImageFilter

from modules import devices, errors, infotext_utils, rng, sd_models, sd_samplers, sd_vae, shared
from modules import sd_samplers_common as common

opt_C, opt_f = 4, 8
standin_log = common.standin_log
VERSION = "v1.10.1"
opts, state = shared.opts, shared.state  # reset in place by the fixtures


def get_fixed_seed(seed):
    try:
        seed = -1 if seed in (None, "") else int(seed)
    except ValueError:
        seed = -1
    return random.randrange(4294967294) if seed == -1 else seed


def fix_seed(p):
    p.seed, p.subseed = get_fixed_seed(p.seed), get_fixed_seed(p.subseed)


def create_random_tensors(shape, seeds, subseeds=None, subseed_strength=0.0, **_):
    return rng.ImageRNG(shape, seeds, subseeds=subseeds, subseed_strength=subseed_strength).next()


class DecodedSamples(list):
    already_decoded = True


def decode_latent_batch(model, batch, target_device=None, **_):
    return DecodedSamples(common.samples_to_images_tensor(z[None], 0, model)[0].to(devices.cpu)
                          for z in batch)


def _grid(images, per_row):
    cols = max(1, min(per_row, len(images)))
    (w, h), rows = images[0].size, math.ceil(len(images) / cols)
    sheet = Image.new("RGB", (cols * w, rows * h))
    for i, img in enumerate(images):
        sheet.paste(img, ((i % cols) * w, (i // cols) * h))
    return sheet


class Processed:
    def __init__(self, p, images_list, seed=-1, info="", subseed=None, all_prompts=None,
                 all_negative_prompts=None, all_seeds=None, all_subseeds=None,
                 index_of_first_image=0, infotexts=None, comments=""):
        for name in ("prompt", "negative_prompt", "subseed_strength", "width", "height",
                     "sampler_name", "cfg_scale", "steps", "batch_size", "sd_model_hash",
                     "denoising_strength", "extra_generation_params", "styles"):
            setattr(self, name, getattr(p, name, None))
        self.images, self.info, self.seed, self.subseed = images_list, info, seed, subseed
        self.index_of_first_image = int(index_of_first_image)
        self.all_prompts = all_prompts or p.all_prompts or [p.prompt]
        self.all_negative_prompts = all_negative_prompts or p.all_negative_prompts
        self.all_seeds, self.all_subseeds = all_seeds or p.all_seeds, all_subseeds or \
            p.all_subseeds
        self.infotexts = infotexts or [info for _ in images_list]
        self.comments = "".join(f"{c}\n" for c in p.comments)

    def infotext(self, p, index):
        return create_infotext(p, self.all_prompts, self.all_seeds, self.all_subseeds,
                               position_in_batch=index % self.batch_size,
                               iteration=index // self.batch_size)


_BASE_FIELDS = dict(  # the A1111 dataclass fields an extension may read (subset)
    sd_model=None, prompt="", styles=None, seed=-1, subseed=-1, subseed_strength=0.0,
    seed_resize_from_h=-1, seed_resize_from_w=-1, sampler_name=None, scheduler=None,
    batch_size=1, n_iter=1, steps=50, cfg_scale=7.0, width=512, height=512, restore_faces=None,
    tiling=None, do_not_save_samples=False, do_not_save_grid=False, negative_prompt="",
    extra_generation_params=None, denoising_strength=None, override_settings=None,
    override_settings_restore_afterwards=True, refiner_checkpoint=None,
    disable_extra_networks=False, firstpass_image=None, comments=None,
    sampler_noise_scheduler_override=None, is_api=False, user=None,
)


class StableDiffusionProcessing:
    FIELDS = _BASE_FIELDS
    EMPTY = ("sampler", "rng", "c", "uc", "prompts", "negative_prompts", "seeds", "subseeds",
             "all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds", "main_prompt",
             "main_negative_prompt", "sd_model_name", "sd_model_hash", "sd_vae_name",
             "sd_vae_hash", "paste_to", "color_corrections")

    def __init__(self, **kwargs):
        unknown = sorted(set(kwargs) - set(self.FIELDS))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {unknown}")
        for key, default in self.FIELDS.items():
            value = kwargs.get(key, default)
            setattr(self, key, value.copy() if isinstance(value, (list, dict)) else value)
        for name, empty in (("extra_generation_params", {}), ("override_settings", {}),
                            ("comments", {}), ("styles", [])):
            setattr(self, name, getattr(self, name) or empty)
        vars(self).update(dict.fromkeys(self.EMPTY), scripts_value=None, script_args_value=None,
                          scripts_setup_complete=False, is_hr_pass=False, iteration=0,
                          is_using_inpainting_conditioning=False, batch_index=0,
                          standin_records=[], standin_pbes_calls=[])

    # A1111 keeps no model on p: it is always the loaded one (261-267)
    sd_model = property(lambda self: shared.sd_model, lambda self, value: None)
    scripts = property(lambda self: self.scripts_value,
                       lambda self, value: self._set_and_setup("scripts_value", value))
    script_args = property(lambda self: self.script_args_value,
                           lambda self, value: self._set_and_setup("script_args_value", value))

    def _set_and_setup(self, slot, value):
        setattr(self, slot, value)
        ready = bool(self.scripts_value) and bool(self.script_args_value)
        if ready and not self.scripts_setup_complete:
            self.setup_scripts()

    def setup_scripts(self):
        self.scripts_setup_complete = True
        self.scripts.setup_scrips(self, is_ui=self.is_api is False)

    def setup_prompts(self):
        count = self.batch_size * self.n_iter
        self.all_prompts = list(self.prompt) if isinstance(self.prompt, list) else \
            [self.prompt] * count
        neg = self.negative_prompt
        self.all_negative_prompts = list(neg) if isinstance(neg, list) else \
            [neg] * len(self.all_prompts)
        self.main_prompt, self.main_negative_prompt = self.all_prompts[0], \
            self.all_negative_prompts[0]

    def setup_conds(self):
        encode = shared.sd_model.get_learned_conditioning
        self.c, self.uc = encode(self.prompts), encode(self.negative_prompts)

    def _inpainting_conditioning(self, latent, keep=None):
        """Inpainting models get ``[repaint mask, latent of the kept pixels]`` (5 channels);
        other models a dummy ``[B, 5, 1, 1]`` (processing.py:120-183, simplified)."""
        inpainting = shared.sd_model.model.conditioning_key in ("hybrid", "concat")
        self.is_using_inpainting_conditioning = inpainting
        if not inpainting:
            return latent.new_zeros((len(latent), 5, 1, 1))
        repaint = torch.ones_like(latent[:, :1]) if keep is None else \
            (1 - keep[:1]).expand(len(latent), 1, -1, -1)
        kept = latent if keep is None else latent * keep
        return torch.cat([repaint.to(latent), kept], dim=1)

    def txt2img_image_conditioning(self, x, **_size):
        return self._inpainting_conditioning(torch.zeros_like(x))

    def _dispatch_pbes(self, x, noise, c, uc):
        self.standin_pbes_calls.append({"pass": common.pass_name(self),
                                        "batch": self.iteration, "x": x, "noise": noise})
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(p=self, x=x, noise=noise, c=c, uc=uc)

    def init(self, *prompts_and_seeds):
        """Per-job preparation (nothing for the base class)."""

    def close(self):
        self.sampler = self.c = self.uc = None


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    FIELDS = {
        **_BASE_FIELDS, "enable_hr": False, "denoising_strength": 0.75,
        "firstphase_width": 0, "firstphase_height": 0, "hr_scale": 2.0, "hr_upscaler": None,
        "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0,
        "hr_checkpoint_name": None, "hr_sampler_name": None, "hr_scheduler": None,
        "hr_prompt": "", "hr_negative_prompt": "", "force_task_id": None,
    }

    EMPTY = (*StableDiffusionProcessing.EMPTY, "latent_scale_mode", "hr_c", "hr_uc")

    def init(self, prompts, seeds, subseeds):
        if not self.enable_hr:
            return
        extra = self.extra_generation_params
        extra["Denoising strength"] = self.denoising_strength
        if self.hr_sampler_name not in (None, self.sampler_name):
            extra["Hires sampler"] = self.hr_sampler_name
        extra["Hires schedule type"] = None  # the sampler fills it in (no hires prompts here)
        self.hr_scheduler = self.hr_scheduler or self.scheduler
        upscaler = self.hr_upscaler or shared.latent_upscale_default_mode
        self.latent_scale_mode = shared.latent_upscale_modes.get(upscaler)
        if self.latent_scale_mode is None:
            raise RuntimeError(f"the stand-in has only latent upscalers, not {upscaler!r}")
        extra["Hires upscale"] = self.hr_scale  # hr_resize_x/y are not mirrored
        self.hr_upscale_to_x = int(self.hr_scale * self.width)
        self.hr_upscale_to_y = int(self.hr_scale * self.height)
        if self.hr_second_pass_steps:
            extra["Hires steps"] = self.hr_second_pass_steps
        if self.hr_upscaler is not None:
            extra["Hires upscaler"] = self.hr_upscaler

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength,
               prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, shared.sd_model)
        x = self.rng.next()
        self._dispatch_pbes(x, x, conditioning, unconditional_conditioning)
        samples = self.sampler.sample(self, x, conditioning, unconditional_conditioning,
                                      image_conditioning=self.txt2img_image_conditioning(x))
        return self._hires(samples) if self.enable_hr else samples

    def _hires(self, samples):
        if state.interrupted:
            return samples
        self.is_hr_pass = True
        self.sampler = sd_samplers.create_sampler(self.hr_sampler_name or self.sampler_name,
                                                  shared.sd_model)
        target = (self.hr_upscale_to_y // opt_f, self.hr_upscale_to_x // opt_f)
        samples = torch.nn.functional.interpolate(samples, size=target,
                                                  **self.latent_scale_mode)
        conditioning = self.txt2img_image_conditioning(samples)
        state.nextjob()
        self.rng = rng.ImageRNG(samples.shape[1:], self.seeds, subseeds=self.subseeds,
                                subseed_strength=self.subseed_strength)
        noise = self.rng.next()
        self.hr_c, self.hr_uc = self.c, self.uc
        if self.scripts is not None:
            self.scripts.before_hr(self)
        self._dispatch_pbes(samples, noise, self.hr_c, self.hr_uc)
        samples = self.sampler.sample_img2img(
            self, samples, noise, self.hr_c, self.hr_uc,
            steps=self.hr_second_pass_steps or self.steps, image_conditioning=conditioning)
        self.sampler = None
        decoded = decode_latent_batch(shared.sd_model, samples)
        self.is_hr_pass = False
        return decoded


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    FIELDS = {
        **_BASE_FIELDS, "init_images": None, "resize_mode": 0, "denoising_strength": 0.75,
        "image_cfg_scale": None, "mask": None, "mask_blur_x": 4, "mask_blur_y": 4,
        "mask_blur": None, "mask_round": True, "inpainting_fill": 0, "inpaint_full_res": True,
        "inpaint_full_res_padding": 0, "inpainting_mask_invert": 0,
        "initial_noise_multiplier": None, "latent_mask": None, "force_task_id": None,
    }

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.image_mask, self.mask, self.nmask = self.mask, None, None
        if self.mask_blur is not None:
            self.mask_blur_x = self.mask_blur_y = self.mask_blur
        if self.initial_noise_multiplier is None:
            self.initial_noise_multiplier = opts.initial_noise_multiplier
        self.init_latent = self.image_conditioning = self.mask_for_overlay = None
        self.init_images = list(self.init_images or [])

    def _prepare_mask(self, extra):
        mask = self.image_mask.convert("L")
        if self.mask_round:
            mask = mask.point(lambda v: 255 if v > 128 else 0)
        if self.inpainting_mask_invert:
            mask = mask.point(lambda v: 255 - v)
            extra["Mask mode"] = "Inpaint not masked"
        radius = max(self.mask_blur_x, self.mask_blur_y)
        if radius > 0:
            mask = mask.filter(ImageFilter.GaussianBlur(radius))
            extra["Mask blur"] = radius
        self.mask_for_overlay = mask = mask.resize((self.width, self.height))
        return mask

    def _pixels(self, img, fill_mask):
        """An init image as ``[3, H, W]`` in 0..1; with "fill" the masked area takes the mean
        colour of the rest (A1111 smears the surrounding colours instead)."""
        pixels = np.asarray(img.convert("RGB").resize((self.width, self.height)), np.float32)
        if fill_mask is not None:
            hole = np.asarray(fill_mask, dtype=np.float32)[..., None] / 255.0
            mean = (pixels * (1 - hole)).sum((0, 1)) / max((1 - hole).sum(), 1.0)
            pixels = (pixels * (1 - hole) + mean * hole).round()
        return np.moveaxis(pixels / 255.0, 2, 0)

    def init(self, prompts, seeds, subseeds):
        extra = self.extra_generation_params
        extra["Denoising strength"] = self.denoising_strength
        self.image_cfg_scale = None
        self.sampler = sd_samplers.create_sampler(self.sampler_name, shared.sd_model)
        image_mask = None if self.image_mask is None else self._prepare_mask(extra)
        latent_mask = image_mask if self.latent_mask is None else self.latent_mask
        filling = image_mask is not None and self.inpainting_fill == 0
        if filling:
            extra["Masked content"] = "fill"
        arrays = [self._pixels(img, latent_mask if filling else None)
                  for img in self.init_images]
        if len(arrays) > self.batch_size and len(arrays) != 1:
            raise RuntimeError(f"bad number of images passed: {len(arrays)}; "
                               f"expecting {self.batch_size} or less")
        if len(arrays) > 1:
            self.batch_size = len(arrays)
        batch = np.stack(arrays if len(arrays) > 1 else arrays * self.batch_size)
        image = torch.from_numpy(batch).to(shared.device, dtype=devices.dtype_vae)
        method = opts.sd_vae_encode_method
        if method != "Full":
            extra["VAE Encoder"] = method
        self.init_latent = common.images_tensor_to_samples(
            image, common.approximation_indexes.get(method), shared.sd_model)
        if image_mask is not None:
            height, width = self.init_latent.shape[2:]
            small = np.asarray(latent_mask.convert("RGB").resize((width, height)), np.float32)
            repaint = small[..., 0] / 255.0
            repaint = torch.from_numpy(np.around(repaint) if self.mask_round else repaint)
            repaint = repaint.expand(self.init_latent.shape[1], -1, -1)
            self.mask = (1.0 - repaint).to(shared.device, devices.dtype)
            self.nmask = repaint.clone().to(shared.device, devices.dtype)
        self.image_conditioning = self._inpainting_conditioning(self.init_latent.float(),
                                                                self.mask)

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength,
               prompts):
        x = self.rng.next()
        multiplier = self.initial_noise_multiplier
        if multiplier != 1.0:
            self.extra_generation_params["Noise multiplier"] = multiplier
            x *= multiplier
        self._dispatch_pbes(self.init_latent, x, conditioning, unconditional_conditioning)
        samples = self.sampler.sample_img2img(self, self.init_latent, x, conditioning,
                                              unconditional_conditioning,
                                              image_conditioning=self.image_conditioning)
        if self.mask is None:
            return samples
        return samples * self.nmask + self.init_latent * self.mask  # (no on_mask_blend hook)


def _shown(flag, value):
    return value if flag else None


def create_infotext(p, all_prompts, all_seeds, all_subseeds, comments=None, iteration=0,
                    position_in_batch=0, use_main_prompt=False, index=None,
                    all_negative_prompts=None):
    """The infotext of one image (or, with ``use_main_prompt``, of the grid)."""
    if use_main_prompt:
        index = 0
    elif index is None:
        index = iteration * p.batch_size + position_in_batch
    negatives = p.all_negative_prompts if all_negative_prompts is None else all_negative_prompts
    if use_main_prompt:
        prompt_text, negative_prompt = p.main_prompt, p.main_negative_prompt
        seed, subseed = p.all_seeds[0], p.all_subseeds[0]
    else:
        prompt_text, negative_prompt = all_prompts[index], negatives[index]
        seed, subseed = all_seeds[index], all_subseeds[index]
    varied = p.subseed_strength != 0
    clip_skip = getattr(p, "clip_skip", opts.CLIP_stop_at_last_layers)
    config = sd_samplers.find_sampler_config(p.sampler_name)
    uses_ensd = bool(config and config.options.get("uses_ensd"))
    params = {
        "Steps": p.steps, "Sampler": p.sampler_name, "Schedule type": p.scheduler,
        "CFG scale": p.cfg_scale, "Image CFG scale": getattr(p, "image_cfg_scale", None),
        "Seed": seed, "Size": f"{p.width}x{p.height}",
        "Model hash": _shown(opts.add_model_hash_to_info, p.sd_model_hash),
        "Model": _shown(opts.add_model_name_to_info, p.sd_model_name),
        "VAE hash": _shown(opts.add_vae_hash_to_info, p.sd_vae_hash),
        "VAE": _shown(opts.add_vae_name_to_info, p.sd_vae_name),
        "Variation seed": _shown(varied, subseed),
        "Variation seed strength": _shown(varied, p.subseed_strength),
        "Denoising strength": p.extra_generation_params.get("Denoising strength", None),
        "Clip skip": _shown(clip_skip > 1, clip_skip),
        "ENSD": _shown(uses_ensd and opts.eta_noise_seed_delta, opts.eta_noise_seed_delta),
        "RNG": _shown(opts.randn_source != "GPU", opts.randn_source),
        "Tiling": _shown(p.tiling, "True"),
    }
    params.update(p.extra_generation_params)
    params["Version"] = _shown(opts.add_version_to_infotext, VERSION)
    params["User"] = _shown(opts.add_user_name_to_info, p.user)
    scope = dict(locals())
    for key in list(params):
        value = params[key]
        try:
            if isinstance(value, list):
                params[key] = value[index]
            elif callable(value):
                params[key] = value(**scope)
        except Exception:
            errors.report(f"Error creating infotext for key {key!r}", exc_info=True)
            params[key] = None
    line = ", ".join(key if key == value else f"{key}: {infotext_utils.quote(value)}"
                     for key, value in params.items() if value is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt_text}{negative}\n{line}".strip()


def process_images(p):
    """Run a whole job: hooks, per-batch sampling, decoding and infotexts (see above)."""
    p.standin_records, p.standin_pbes_calls = [], []
    if p.scripts is not None:
        p.scripts.before_process(p)
    saved = {k: opts.data[k] for k in p.override_settings if k in opts.data}
    try:
        for key, value in p.override_settings.items():
            opts.set(key, value, is_api=True, run_callbacks=False)
        sd_samplers.fix_p_invalid_sampler_and_scheduler(p=p)
        return process_images_inner(p)
    finally:
        if p.override_settings_restore_afterwards is True:
            for key, value in saved.items():
                setattr(opts, key, value)


def process_images_inner(p):
    seed, subseed = get_fixed_seed(p.seed), get_fixed_seed(p.subseed)
    model = shared.sd_model
    p.sd_model_name = model.sd_checkpoint_info.name_for_extra
    p.sd_model_hash = model.sd_model_hash
    p.sd_vae_name, p.sd_vae_hash = sd_vae.get_loaded_vae_name(), sd_vae.get_loaded_vae_hash()
    p.setup_prompts()
    count = len(p.all_prompts)
    p.all_seeds = seed if isinstance(seed, list) else \
        [int(seed) + (i if p.subseed_strength == 0 else 0) for i in range(count)]
    p.all_subseeds = subseed if isinstance(subseed, list) else \
        [int(subseed) + i for i in range(count)]
    runner = p.scripts
    if runner is not None:
        runner.process(p)
    texts, images = [], []
    with torch.no_grad():
        p.init(p.all_prompts, p.all_seeds, p.all_subseeds)  # e.g. img2img's init_latent
        if state.job_count == -1:
            state.job_count = p.n_iter
        for n in range(p.n_iter):
            p.iteration = n
            state.skipped = False
            if state.stopping_generation or state.interrupted:
                break
            sd_models.reload_model_weights()
            window = slice(n * p.batch_size, (n + 1) * p.batch_size)
            p.prompts, p.negative_prompts = p.all_prompts[window], p.all_negative_prompts[window]
            p.seeds, p.subseeds = p.all_seeds[window], p.all_subseeds[window]
            channels = getattr(shared.sd_model, "latent_channels", opt_C)
            p.rng = rng.ImageRNG((channels, p.height // opt_f, p.width // opt_f), p.seeds,
                                 subseeds=p.subseeds, subseed_strength=p.subseed_strength)
            about = {"batch_number": n, "prompts": p.prompts, "seeds": p.seeds,
                     "subseeds": p.subseeds}
            if runner is not None:
                runner.before_process_batch(p, **about)
            if not p.prompts:
                break
            if runner is not None and not p.disable_extra_networks:
                runner.after_extra_networks_activate(p, extra_network_data={}, **about)
            if runner is not None:
                runner.process_batch(p, **about)
            p.setup_conds()
            if p.n_iter > 1:
                state.job = f"Batch {n + 1} out of {p.n_iter}"
            sd_models.apply_alpha_schedule_override(shared.sd_model, p)
            samples = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds,
                               subseeds=p.subseeds, subseed_strength=p.subseed_strength,
                               prompts=p.prompts)
            if runner is not None:
                from modules.scripts import PostSampleArgs

                holder = PostSampleArgs(samples)
                runner.post_sample(p, holder)
                samples = holder.samples
            if not getattr(samples, "already_decoded", False):
                devices.test_for_nans(samples, "unet")
                samples = decode_latent_batch(shared.sd_model, samples)
            state.nextjob()
            pixels = ((torch.stack(list(samples)).float() + 1) / 2).clamp(0, 1)
            _finish_batch(p, n, pixels, texts, images)
        if not texts:
            texts.append(Processed(p, images_list=[]).infotext(p, 0))
        first_image = 0
        if opts.return_grid and not p.do_not_save_grid and not (
                len(images) < 2 and opts.grid_only_if_multiple):
            texts.insert(0, create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds,
                                            use_main_prompt=True))
            images.insert(0, _grid(images, p.batch_size))
            first_image = 1
    res = Processed(p, images, seed=p.all_seeds[0], info=texts[0], subseed=p.all_subseeds[0],
                    index_of_first_image=first_image, infotexts=texts)
    if runner is not None:
        runner.postprocess(p, res)
    return res


def _finish_batch(p, n, pixels, texts, images):
    from modules import scripts

    runner = p.scripts
    if runner is not None:
        runner.postprocess_batch(p, pixels, batch_number=n)
        listed = scripts.PostprocessBatchListArgs(list(pixels))
        runner.postprocess_batch_list(p, listed, batch_number=n)
        pixels = listed.images
    for i, one in enumerate(pixels):
        p.batch_index = i
        array = (one.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
        image = Image.fromarray(array)
        if runner is not None:
            holder = scripts.PostprocessImageArgs(image=image)
            runner.postprocess_image(p, holder)
            image = holder.image
        text = create_infotext(p, p.prompts, p.seeds, p.subseeds, index=i,
                               all_negative_prompts=p.negative_prompts)
        texts.append(text)
        if opts.enable_pnginfo:
            image.info["parameters"] = text
        images.append(image)
