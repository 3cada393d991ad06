"""Mirrors A1111 ``modules/sd_unet.py``: ``current_unet`` is the active replacement UNet (e.g. TensorRT),
``None`` here unless a test sets it; ``apply_unet`` does nothing."""
unet_options = []
current_unet_option = None
current_unet = None
original_forward = None


def list_unets():
    from modules import script_callbacks
    unet_options.clear()
    unet_options.extend(script_callbacks.list_unets_callback())


def apply_unet(option=None):
    pass
