"""Stand-in for stable-diffusion-webui-forge's ``modules_forge`` package (only ``alter_samplers``)."""
