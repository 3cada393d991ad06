"""Command-line flags of the extension (the WebUI calls ``preload`` before parsing arguments)."""
import os


def preload(parser):
    from modules import paths

    parser.add_argument(
        "--videoelevator-dir", type=str, default=os.path.join(paths.models_path, "VideoElevator"),
        help="Folder with VideoElevator motion models (AnimateDiff/AnimateLCM); AnimateDiff's folders are "
             "searched too",
    )
