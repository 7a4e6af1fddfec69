"""Stand-in for A1111 ``modules/sd_vae_approx.py``: ``cheap_approximation`` (81-103), a fixed
linear latent->RGB map with A1111's coefficient tables (rows: latent channel; cols: R, G, B)."""

import torch

from modules import shared

SD_TABLE = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173),
            (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
SDXL_TABLE = ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250),
              (0.1074, 0.0886, -0.0163), (-0.3730, -0.2499, -0.2088))


def cheap_approximation(sample):
    table = SDXL_TABLE if getattr(shared.sd_model, "is_sdxl", False) else SD_TABLE
    weights = torch.tensor(table, dtype=sample.dtype, device=sample.device)
    return torch.einsum("...chw,cr->...rhw", sample, weights)
