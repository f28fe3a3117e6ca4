"""pa3d_app: a local web app for zero-shot part segmentation (``pa3d app``; the ``app`` extra installs Gradio).

Upload a mesh or point cloud, type part names, pick a checkpoint and a text model, and see the parts on the
shape in an interactive 3D view, or one part's similarity as a heatmap; download the labelled GLB, the PLY
and an NPZ. Runs offline on 127.0.0.1 with Gradio's analytics and version checks off.
"""

from .app import build_app, find_default_checkpoint, launch

__all__ = ["build_app", "launch", "find_default_checkpoint"]
