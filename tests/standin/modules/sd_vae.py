"""Stand-in for A1111 ``modules/sd_vae.py`` (``get_loaded_vae_name``/``_hash``, 33-44): None
means the checkpoint's own VAE; a test may set ``loaded_vae_file`` to fake an external one."""

import hashlib
import os

loaded_vae_file = None


def get_loaded_vae_name():
    return os.path.basename(loaded_vae_file) if loaded_vae_file else None


def get_loaded_vae_hash():
    return hashlib.sha256(loaded_vae_file.encode()).hexdigest()[:10] if loaded_vae_file else None
