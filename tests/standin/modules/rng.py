"""Stand-in for A1111 ``modules/rng.py``: ``ImageRNG`` (99-163) keeps one generator per seed;
``first()`` slerps toward the subseed noise when ``subseed_strength != 0`` and re-seeds with
``seed + eta_noise_seed_delta``; ``next()`` keeps drawing. Noise depends on its seed only.
CPU generators for every ``randn_source``; no seed resize.
"""

import torch

from modules import devices, shared


def create_generator(seed):
    return torch.Generator(devices.cpu).manual_seed(int(seed))


def randn(seed, shape, generator=None):  # a seeded draw (or one from ``generator``)
    gen = create_generator(seed) if generator is None else generator
    return torch.randn(tuple(shape), generator=gen).to(devices.device)


def randn_without_seed(shape, generator=None):  # keeps drawing from ``generator``
    return torch.randn(tuple(shape), generator=generator).to(devices.device)


def slerp(weight, start, end):
    """Spherical interpolation from ``start`` (weight 0) to ``end`` (weight 1), the angle taken
    along dim 1 of ``[C, H, W]`` noise as in A1111; nearly parallel inputs are lerped."""
    cos = ((start / start.norm(dim=1, keepdim=True)) * (end / end.norm(dim=1, keepdim=True))).sum(1)
    if cos.mean() > 0.9995:
        return torch.lerp(end, start, weight)  # A1111's fallback weights ``start`` by ``weight``
    angle = cos.acos()
    return (((1.0 - weight) * angle).sin() / angle.sin()).unsqueeze(1) * start + \
        ((weight * angle).sin() / angle.sin()).unsqueeze(1) * end


class ImageRNG:
    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0,
                 seed_resize_from_w=0):
        self.shape = tuple(int(s) for s in shape)
        self.seeds, self.subseeds, self.subseed_strength = seeds, subseeds, subseed_strength
        self.generators = [create_generator(s) for s in seeds]
        self.is_first = True

    def first(self):
        draws = []
        for i, gen in enumerate(self.generators):
            noise = randn(self.seeds[i], self.shape, generator=gen)
            if self.subseed_strength != 0 and self.subseeds is not None:
                sub = self.subseeds[i] if i < len(self.subseeds) else 0
                noise = slerp(self.subseed_strength, noise, randn(sub, self.shape))
            draws.append(noise)
        delta = shared.opts.eta_noise_seed_delta or 0
        if delta:
            self.generators = [create_generator(s + delta) for s in self.seeds]
        return torch.stack(draws).to(shared.device)

    def next(self):
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([randn_without_seed(self.shape, g) for g in self.generators])
