"""Run by the WebUI at install and at launch: installs what the WebUI does not ship, never torch."""
import launch

REQUIREMENTS = {
    "diffusers": "diffusers>=0.42,<0.43",
    "av": "av>=12",
    "safetensors": "safetensors>=0.4",
}

for module, requirement in REQUIREMENTS.items():
    if not launch.is_installed(module):
        try:
            launch.run_pip(f'install "{requirement}"', f"VideoElevator requirement: {requirement}")
        except Exception as error:  # the WebUI must still start; the script reports what is missing
            print(f"VideoElevator: could not install {requirement}: {error}")
