"""Run by the WebUI at install and at launch: installs what the WebUI does not ship, never torch.

diffusers is bounded so pip cannot pull a huggingface-hub 1.x beside the WebUI's transformers
(A1111 1.10 pins transformers 4.30.2, which needs huggingface-hub < 1.0); Forge 2 ships diffusers.
"""
import launch

REQUIREMENTS = {
    "diffusers": '"diffusers>=0.31,<0.36" "huggingface-hub<1.0"',
    "av": '"av>=12"',
}

for module, requirement in REQUIREMENTS.items():
    if not launch.is_installed(module):
        try:
            launch.run_pip(f"install {requirement}", f"VideoElevator requirement: {requirement}")
        except Exception as error:  # the WebUI must still start; the script reports what is missing
            print(f"VideoElevator: could not install {requirement}: {error}")
