"""``pa3d app``: start the local web app (registered in :data:`pa3d_cli.main.COMMANDS`)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pa3d app``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "A local web app (Gradio; pip install 'pa3d[app]'): upload a mesh or point cloud (OBJ, PLY, OFF, GLB/GLTF, "
        "STL, PCD, NPZ, NPY, XYZ), type part names, pick a checkpoint and a text model, see the parts in an "
        "interactive 3D view or one part's similarity as a heatmap, and download the labelled mesh (GLB), the PLY "
        "and an NPZ.\n\n"
        "It binds 127.0.0.1 (this machine only) unless --host says otherwise, runs offline (no analytics, no "
        "version check, no fonts or scripts from the network), and keeps text embeddings cached between "
        "requests. The default checkpoint is the newest runs/*/stage2/model the recipe wrote; without one the "
        "page warns that the weights are UNTRAINED. Legacy official .pt pickles load only when the page's "
        "'trusted file' box is ticked."
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the app to your network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--checkpoint", help="default checkpoint: pa3d folder, official .pt, or hf://ORG/REPO "
                                             "(default: the newest runs/*/stage2/model)")
    parser.add_argument("--runs", default="runs", help="where to look for the recipe's models (default runs/)")
    parser.add_argument("--text-model", default="auto", help="default text encoder spec (auto, minilm, fixed:DIM...)")
    parser.add_argument("--model", default="patchalign3d_base", help="registered config for untrained weights")
    parser.add_argument("--num-points", type=int, default=2048, help="points sampled per shape (2048)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a start-up error")


def run(args: argparse.Namespace) -> int:
    """Run ``pa3d app`` (serves until interrupted)."""
    if not 0 <= args.port <= 65535:
        print(f"pa3d app: error: --port must be in [0, 65535], got {args.port}", file=sys.stderr)
        return 2
    if args.num_points < 1:
        print(f"pa3d app: error: --num-points must be >= 1, got {args.num_points}", file=sys.stderr)
        return 2
    try:
        from .app import launch

        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"pa3d app: WARNING: binding {args.host}: other machines can reach this app", file=sys.stderr)
        launch(args.host, args.port, checkpoint=args.checkpoint, runs_dir=args.runs, text_model=args.text_model,
               model_name=args.model, num_points=args.num_points)
    except KeyboardInterrupt:
        return 0
    except (ImportError, OSError, ValueError, RuntimeError) as err:
        if args.debug:
            raise
        print(f"pa3d app: error: {err}", file=sys.stderr)
        return 1
    return 0
