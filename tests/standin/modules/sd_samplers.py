"""Stand-in for A1111 ``modules/sd_samplers.py``: the registry and ``create_sampler`` (36-49),
which builds the sampler from the CURRENT ``shared.sd_model`` and sets ``sampler.config`` to
its ``SamplerData``. Processing calls it in ``p.sample`` (txt2img, hires) and ``p.init``
(img2img) -- HOST-NOTES 11.2."""

from modules import sd_samplers_kdiffusion, sd_samplers_timesteps

all_samplers = [*sd_samplers_kdiffusion.samplers_data_k_diffusion,
                *sd_samplers_timesteps.samplers_data_timesteps]
all_samplers_map = {d.name: d for d in all_samplers}
samplers = samplers_for_img2img = all_samplers
samplers_map = {key.lower(): d.name for d in all_samplers for key in (d.name, *d.aliases)}


def find_sampler_config(name):
    if name is None:
        return all_samplers[0]
    return all_samplers_map.get(samplers_map.get(name.lower(), name))


def create_sampler(name, model):
    config = find_sampler_config(name)
    assert config is not None, f"bad sampler name: {name}"
    sampler = config.constructor(model)
    sampler.config = config
    return sampler


def fix_p_invalid_sampler_and_scheduler(p):  # unknown names -> the defaults
    if find_sampler_config(p.sampler_name) is None:
        p.sampler_name = all_samplers[0].name
    if p.scheduler not in sd_samplers_kdiffusion.schedulers_map:
        p.scheduler = "Automatic"
