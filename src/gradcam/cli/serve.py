"""``gradcam serve``: the web demo (:mod:`gradcam.demo`) on this machine."""

from __future__ import annotations

import argparse
from typing import Any

from gradcam.cli.common import MODEL_HELP, WEIGHTS_HELP
from gradcam.errors import GradCAMError

__all__ = ["add_parser", "serve_command"]


def add_parser(commands: Any) -> None:
    """Add ``gradcam serve`` to the subparsers ``commands``."""
    serve = commands.add_parser(
        "serve",
        help="start the web demo: upload a photo, see why the model said what it said",
        description="Serve the Grad-CAM web demo (Gradio) on this machine; works offline. "
        "Needs the demo extra: pip install 'gradcam[demo]'.",
    )
    serve.add_argument(
        "--model",
        default="efficientnet_lite0",
        help=f"{MODEL_HELP} (default: %(default)s)",
    )
    serve.add_argument("--weights", metavar="W", help=WEIGHTS_HELP)
    serve.add_argument(
        "--video-model",
        metavar="NAME",
        help="also serve a Video tab with this video model (r3d_18, mc3_18, r2plus1d_18, "
        "s3d, ... or FILE.py:FACTORY): a short clip in, the "
        "animated Grad-CAM overlay out (default: no Video tab)",
    )
    serve.add_argument(
        "--video-weights",
        metavar="W",
        help="weights of --video-model, as --weights reads them",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: %(default)s, this machine only; 0.0.0.0 for all)",
    )
    serve.add_argument("--port", type=int, default=7860, help="TCP port (default: %(default)s)")
    serve.add_argument(
        "--max-file-size",
        type=float,
        default=20.0,
        metavar="MB",
        help="largest upload accepted, in MiB (default: %(default)s)",
    )
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    """``gradcam serve``: :func:`gradcam.demo.app.serve` with the command's options."""
    try:
        from gradcam.demo.app import serve
    except ImportError as exc:
        raise GradCAMError(
            f"the web demo needs Gradio ({exc}): pip install 'gradcam[demo]'"
        ) from None
    serve(
        args.model,
        args.weights,
        host=args.host,
        port=args.port,
        max_file_size_mb=args.max_file_size,
        video_model=args.video_model,
        video_weights=args.video_weights,
    )
    return 0
