"""Mirrors A1111 ``modules/sd_vae.py`` as seen by processing: no separate VAE file is loaded."""
loaded_vae_file = None


def get_loaded_vae_name():
    return None


def get_loaded_vae_hash():
    return None


def reload_vae_weights(sd_model=None, vae_file=None):
    return sd_model
