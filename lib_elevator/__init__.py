"""VideoElevator core: training-free video quality elevation with a T2I and a T2V model.

Pure torch/diffusers/einops code; never imports WebUI modules. Hosts plug in through
``lib_elevator.webui`` (AUTOMATIC1111, Forge) and
``lib_elevator.standalone`` (diffusers, CLI).
"""
