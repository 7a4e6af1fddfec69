"""What one generation does with the leak, independent of the host.

``plan_generation`` decides, before sampling, whether and how the leak applies (preset
lookup, channel and model-family guard, infotext). A :class:`LeakEngine` turns a plan into
tensors: the start handed to a txt2img sampler (DESIGN 7.2) and the edited init latent of
img2img (7.3). Prepared samplers are cached, so a batch costs only its draws.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from .infotext import infotext_entries
from .lowfreq import colour_means, reference_components
from .mixing import StartConvention, sampler_input, swap_lowfreq
from .preset import Preset, PresetError
from .sampling import IncompatiblePresetError, LeakSampler
from .settings import MAX_CHANNELS, MEAN_RANGE, LeakSettings

# SD 1.x and 2.x share one VAE, so one latent space (DESIGN section 2).
_LATENT_SPACE = {"sd1": "sd1/sd2", "sd2": "sd1/sd2", "sdxl": "sdxl"}


def same_latent_space(a: str, b: str) -> bool:
    """Whether model families ``a`` and ``b`` are known to share a latent space.

    An ``unknown`` family is never known to match: such a preset is applied only when the
    user allows presets from other families.
    """
    if "unknown" in (a, b):
        return False
    return _LATENT_SPACE.get(a, a) == _LATENT_SPACE.get(b, b)


@dataclass(frozen=True)
class LeakPlan:
    """The decision for one generation. ``reason`` non-empty means: do not apply."""

    settings: LeakSettings
    preset: Preset | None
    reason: str = ""
    reference_hash: str = ""  # set when the fixed values came from a reference image
    predicted_colour: str = ""  # the colour the resolved means give (colour target)

    @property
    def applies(self) -> bool:
        return self.settings.enabled and not self.reason

    @property
    def label(self) -> str:
        return "manual" if self.preset is None else self.settings.preset

    def infotext(self, reason: str = "") -> dict[str, object]:
        preset_hash = self.preset.short_hash if self.preset is not None else ""
        return infotext_entries(self.settings, preset_hash, reason or self.reason,
                                self.reference_hash)


def plan_generation(settings: LeakSettings, find_preset: Callable[[str], Preset], *,
                    model_channels: int, model_family: str,
                    allow_other_families: bool = False) -> LeakPlan:
    """Look the preset up and check it against the loaded model (DESIGN 7.7)."""
    if settings.is_manual:
        if any(c >= model_channels for c in [*settings.means, *(k[0] for k in
                                                                settings.components)]):
            return LeakPlan(settings, None, f"the model has {model_channels} latent channels")
        return _with_colour(LeakPlan(settings, None), model_family, model_channels)
    try:
        preset = find_preset(settings.preset)
    except PresetError as exc:
        return LeakPlan(settings, None, str(exc))
    if preset.channels != model_channels:
        return LeakPlan(settings, preset, f"preset {settings.preset} has {preset.channels} latent "
                        f"channels; the model has {model_channels}")
    if not allow_other_families and not same_latent_space(preset.model_family, model_family):
        fitted = ("an unknown model family (family unknown)" if preset.model_family == "unknown"
                  else preset.model_family)
        return LeakPlan(settings, preset, f"preset {settings.preset} was fitted for {fitted}, "
                        f"the model is {model_family} (see the setting 'Allow presets from "
                        "other model families')")
    if preset.kind == "dct+pixel":
        outside = sorted({(u, v) for _, u, v in settings.components} - set(preset.coords))
        if outside:
            return LeakPlan(settings, preset, f"component(s) {', '.join(map(str, outside))} "
                            f"are not in preset {settings.preset}'s low-frequency set "
                            f"{preset.coords}")
    return _with_colour(LeakPlan(settings, preset), model_family, model_channels)


def _with_colour(plan: LeakPlan, model_family: str, model_channels: int) -> LeakPlan:
    """Resolve a colour target into the means of the channels the user left free."""
    s = plan.settings
    if not s.colour or plan.reason:
        return plan
    means, predicted = colour_means(s.colour, model_family, s.means, min(model_channels, 4))
    lo, hi = MEAN_RANGE
    clipped = {c: min(hi, max(lo, m)) for c, m in means.items()}
    return replace(plan, settings=replace(s, means={**s.means, **clipped}),
                   predicted_colour=predicted)


def resolve_reference(plan: LeakPlan, latent: torch.Tensor, image_hash: str) -> LeakPlan:
    """Fix the leak's LF components to those of a reference image's latent ``(C, H, W)`` at
    the generation's size: the preset's LF set, or the DC term and first gradients in manual
    mode (and for ``pixel`` presets). Values the user fixed explicitly are kept; the rest is
    clipped to the controls' range. The reference itself is dropped from the settings, so
    the infotext carries the values (and the image's hash, for information)."""
    s = plan.settings
    coords = plan.preset.coords if plan.preset is not None and plan.preset.coords else None
    found = reference_components(latent, coords)
    lo, hi = MEAN_RANGE
    means = {c: min(hi, max(lo, a)) for (c, u, v), a in found.items()
             if (u, v) == (0, 0) and c < MAX_CHANNELS}
    comps = {k: min(hi, max(lo, a)) for k, a in found.items()
             if k[1:] != (0, 0) and k[0] < MAX_CHANNELS}
    settings = replace(s, means={**means, **s.means}, components={**comps, **s.components},
                       reference=None)
    return replace(plan, settings=settings, reference_hash=image_hash)


def leak_seeds(settings: LeakSettings, image_seeds: Sequence[int], iteration: int,
               batch_size: int) -> list[int]:
    """Seeds of the leaks of one batch: the images' own, or the fixed leak seed numbered the
    way the WebUI numbers image seeds (``seed + index in the job``)."""
    if settings.seed < 0:
        return [int(s) for s in image_seeds]
    first = settings.seed + iteration * batch_size
    return [first + i for i in range(len(image_seeds))]


class AppliedMarks:
    """Remembers which tensors already got the leak, so a repeated hook call is a no-op.

    A tensor is recognised by its storage address and its in-place version counter, both
    recorded right after our edit: a fresh noise tensor (or one changed since) never matches.
    """

    def __init__(self) -> None:
        self._marks: dict[object, tuple[int, int]] = {}

    def mark(self, key: object, tensor: torch.Tensor) -> None:
        self._marks[key] = (tensor.data_ptr(), tensor._version)

    def is_marked(self, key: object, tensor: torch.Tensor) -> bool:
        return self._marks.get(key) == (tensor.data_ptr(), tensor._version)


class LeakEngine:
    """Prepared leak samplers, cached by preset, shape, device and settings."""

    def __init__(self, cache_size: int = 8) -> None:
        self._cache: OrderedDict[tuple, LeakSampler] = OrderedDict()
        self._size = cache_size

    def sampler(self, plan: LeakPlan, shape: Sequence[int], device: torch.device,
                dtype: torch.dtype = torch.float32) -> LeakSampler:
        s = plan.settings
        preset_key = None if plan.preset is None else (plan.preset.sha256 or id(plan.preset))
        key = (preset_key, tuple(int(v) for v in shape), str(device), dtype, s.lf,
               tuple(sorted(s.means.items())), tuple(sorted(s.components.items())))
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        made = LeakSampler(plan.preset, shape, device=device, dtype=dtype, lf_mode=s.lf,
                           means=s.means, components=s.components)
        self._cache[key] = made
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return made

    def draw(self, plan: LeakPlan, shape: Sequence[int], device: torch.device,
             image_seeds: Sequence[int], iteration: int = 0, batch_size: int | None = None,
             subseeds: Sequence[int] | None = None, subseed_strength: float = 0.0
             ) -> torch.Tensor:
        """One leak per image of the batch, ``(B, C, H, W)`` float32 on ``device``."""
        seeds = leak_seeds(plan.settings, image_seeds, iteration, batch_size or len(image_seeds))
        use_variation = plan.settings.seed < 0 and subseeds is not None and subseed_strength > 0
        return self.sampler(plan, shape, device).draw(
            seeds, list(subseeds)[:len(seeds)] if use_variation else None,
            subseed_strength if use_variation else 0.0)

    def txt2img_start(self, noise: torch.Tensor, plan: LeakPlan, convention: StartConvention,
                      image_seeds: Sequence[int], iteration: int = 0,
                      batch_size: int | None = None, subseeds: Sequence[int] | None = None,
                      subseed_strength: float = 0.0) -> torch.Tensor:
        """The tensor to hand the sampler in place of ``noise`` (``(B, C, H, W)``)."""
        strength = plan.settings.strength
        if strength == 0:
            return noise
        leaks = self.draw(plan, noise.shape[1:], noise.device, image_seeds[:noise.shape[0]],
                          iteration, batch_size, subseeds, subseed_strength)
        return sampler_input(noise, leaks, convention, strength)

    def img2img_init(self, original: torch.Tensor, plan: LeakPlan, image_seeds: Sequence[int],
                     mask: torch.Tensor | None = None, iteration: int = 0,
                     batch_size: int | None = None, subseeds: Sequence[int] | None = None,
                     subseed_strength: float = 0.0) -> torch.Tensor:
        """The init latent with its LF content moved toward the leak's, under the mask."""
        strength = plan.settings.strength
        if strength == 0:
            return original
        seeds = list(image_seeds)[:original.shape[0]]
        seeds += [seeds[-1] + i + 1 for i in range(original.shape[0] - len(seeds))]
        sampler = self.sampler(plan, original.shape[1:], original.device)
        leaks = self.draw(plan, original.shape[1:], original.device, seeds, iteration,
                          batch_size, subseeds, subseed_strength)
        basis, channels = sampler.lowfreq_projector()
        return swap_lowfreq(original, leaks, basis, strength, mask=mask, channels=channels)


__all__ = ["AppliedMarks", "IncompatiblePresetError", "LeakEngine", "LeakPlan", "leak_seeds",
           "plan_generation", "resolve_reference", "same_latent_space"]
