"""The ``pa3d app`` web app: Gradio Blocks over :class:`SegmentSession`, which holds the logic (and is tested
without a browser).

Privacy and offline use: the server binds 127.0.0.1 unless told otherwise, Gradio's analytics and version
check are off (``GRADIO_ANALYTICS_ENABLED=False``), server-side rendering is off, and the theme uses the
system's fonts, so the page loads nothing from the network.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pa3d_cli.segment import (
    SHAPE_SUFFIXES,
    Segmenter,
    SegmentError,
    ShapeSegmentation,
    load_model,
    load_shape,
    load_text_encoder,
    parse_part_names,
)
from pa3d_layers import CALIBRATIONS

__all__ = ["SegmentSession", "build_app", "launch", "find_default_checkpoint", "GRADIO_ENV", "UPLOAD_SUFFIXES"]

#: Environment set before Gradio is imported: no analytics, no version check, no hub telemetry.
GRADIO_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}

#: File types the upload accepts.
UPLOAD_SUFFIXES = tuple(s for s in SHAPE_SUFFIXES)

_PARTS_VIEW = "parts"
_HOW_TO_GET_WEIGHTS = (
    "Train a model with `make demo` (or `python recipes/patchalign3d.py`; the app then picks the newest "
    "`runs/*/stage2/model` by itself), or enter a checkpoint: a pa3d folder, an official `.pt` (tick "
    "*trusted file*), or `hf://ORG/REPO` already in the local cache."
)


def _import_gradio():
    os.environ.update(GRADIO_ENV)
    # hub ids (checkpoints, text models) resolve from the local cache unless the user asked for the network
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gradio as gr
    except ImportError as err:
        raise ImportError(
            "pa3d app needs Gradio, which is not installed: pip install 'pa3d[app]' (or pip install gradio)"
        ) from err
    return gr


def find_default_checkpoint(runs_dir: str | os.PathLike = "runs") -> Path | None:
    """The newest Stage-2 model the recipe wrote under ``runs_dir`` (``*/stage2/model`` holding
    ``config.json`` and ``model.safetensors``), or None.

    Examples:
        >>> find_default_checkpoint("/nonexistent") is None
        True
    """
    root = Path(runs_dir)
    if not root.is_dir():
        return None
    found = [p for p in root.glob("**/stage2/model") if (p / "config.json").is_file()
             and (p / "model.safetensors").is_file()]
    if not found:
        return None
    return max(found, key=lambda p: ((p / "model.safetensors").stat().st_mtime, str(p)))


def _octahedra(points: np.ndarray, colors: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small octahedron per point, so a point cloud shows as solid dots in any mesh viewer."""
    offs = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64) * radius
    tri = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    n = len(points)
    verts = (points[:, None, :] + offs[None]).reshape(-1, 3)
    faces = (tri[None] + 6 * np.arange(n)[:, None, None]).reshape(-1, 3)
    return verts, faces, np.repeat(colors, 6, axis=0)


class SegmentSession:
    """What the page does, without the page: load weights and text models (cached), segment an upload,
    write the downloads, and draw the parts or a part's heatmap as a GLB for the 3D view.

    Args:
        checkpoint: the default checkpoint (None: the newest under ``runs_dir``, else untrained).
        text_model: the default text-encoder spec.
        model_name: the registered config used for untrained weights.
        runs_dir: where the recipe writes models.
        num_points: points the model sees per shape.
        workdir: where results are written (a fresh temporary folder by default).
    """

    def __init__(
        self,
        *,
        checkpoint: str | None = None,
        text_model: str = "auto",
        model_name: str = "patchalign3d_base",
        runs_dir: str | os.PathLike = "runs",
        num_points: int = 2048,
        workdir: str | os.PathLike | None = None,
    ) -> None:
        default = checkpoint if checkpoint else find_default_checkpoint(runs_dir)
        self.default_checkpoint = "" if default is None else str(default)
        self.text_model = text_model
        self.model_name = model_name
        self.num_points = num_points
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="pa3d_app_"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._encoders: dict[str, Any] = {}
        self._segmenters: dict[tuple[str, bool, str], Segmenter] = {}
        self._runs = 0

    # -- loading ------------------------------------------------------------------------------------------
    def segmenter(self, checkpoint: str, trusted: bool, text_model: str) -> Segmenter:
        """A cached :class:`~pa3d_cli.segment.Segmenter` for these settings (text embeddings stay cached)."""
        checkpoint = (checkpoint or "").strip()
        text_model = (text_model or "auto").strip()
        key = (checkpoint, bool(trusted), text_model)
        if key not in self._segmenters:
            if text_model not in self._encoders:
                self._encoders[text_model] = load_text_encoder(text_model, verbose=False)
            encoder = self._encoders[text_model]
            model, untrained = load_model(checkpoint or None, model_name=self.model_name, text_dim=encoder.dim,
                                          trusted=bool(trusted))
            self._segmenters[key] = Segmenter(model, encoder, untrained=untrained, checkpoint=checkpoint or None)
        return self._segmenters[key]

    # -- one request --------------------------------------------------------------------------------------
    def run(
        self,
        upload: str | os.PathLike | None,
        parts: str,
        *,
        checkpoint: str | None = None,
        trusted: bool = False,
        text_model: str | None = None,
        up_axis: str | None = None,
        num_points: int | None = None,
        calibration: str = "none",
    ) -> dict[str, Any]:
        """Segment an uploaded file.

        ``calibration`` is ``pa3d segment --calibration``: ``"none"`` gives each point its most similar name,
        ``"prior"`` first corrects for names that win most of the shape (:func:`pa3d_layers.prior_correction`).

        Returns:
            ``{"result": ShapeSegmentation, "view": GLB path, "downloads": [GLB, PLY, NPZ], "legend": HTML,
            "status": Markdown, "choices": view names}``.

        Raises:
            SegmentError: with a message for the page (bad file, empty or duplicate parts, missing weights...).
        """
        if upload is None or str(upload) == "":
            raise SegmentError("upload a mesh or point cloud first (" + ", ".join(UPLOAD_SUFFIXES) + ")")
        if not parts or not str(parts).strip():
            raise SegmentError("type the part names, separated by commas (e.g. head, body, wing, foot)")
        names = parse_part_names(str(parts))
        up = None if up_axis in (None, "", "auto") else str(up_axis)
        seg_engine = self.segmenter(checkpoint if checkpoint is not None else self.default_checkpoint, trusted,
                                    text_model or self.text_model)
        src = Path(upload)
        shape = load_shape(src)
        result = seg_engine(shape, names, num_points=int(num_points or self.num_points), up_axis=up,
                            calibration=str(calibration or "none"))
        self._runs += 1
        out = self.workdir / f"run{self._runs:04d}"
        out.mkdir(parents=True, exist_ok=True)
        stem = _safe_stem(src)
        downloads = [result.write(out / f"{stem}_parts.glb"), result.write(out / f"{stem}_parts.ply", binary=True),
                     result.write(out / f"{stem}_parts.npz")]
        view = self.view(result, _PARTS_VIEW, out)
        status = _status(result)
        return {"result": result, "view": str(view), "downloads": [str(p) for p in downloads],
                "legend": legend_html(result), "status": status, "choices": view_choices(result.names),
                "folder": str(out)}

    def view(self, result: ShapeSegmentation, choice: str, folder: str | os.PathLike | None = None) -> Path:
        """A GLB for the 3D view: the parts (``"parts"``) or a part's heatmap (``"heatmap: NAME"``)."""
        folder = Path(folder) if folder else self.workdir
        if choice == _PARTS_VIEW or not choice:
            colors, name = result.colors(), "view_parts"
        else:
            part = choice.removeprefix("heatmap: ")
            colors, name = result.heatmap_colors(part), f"view_heatmap_{result.part_index(part)}"
        path = folder / f"{name}.glb"
        if result.shape.is_mesh:
            return result.write(path, colors=colors)
        from pa3d_data.writers import write_glb

        pts = result.shape.vertices
        keep = np.linspace(0, len(pts) - 1, min(len(pts), 20000)).astype(np.int64)
        diag = float(np.linalg.norm(pts.max(0) - pts.min(0))) or 1.0
        verts, faces, cols = _octahedra(pts[keep], colors[keep], 0.004 * diag)
        return write_glb(path, verts, faces, colors=cols, up_axis=result.up_axis)

    def cleanup(self) -> None:
        """Delete the results folder."""
        shutil.rmtree(self.workdir, ignore_errors=True)


def _safe_stem(path: Path) -> str:
    import re

    return re.sub(r"[^\w.-]+", "_", path.stem).strip("_") or "shape"


def view_choices(names: Sequence[str]) -> list[str]:
    """The 3D view's options: the parts, then one heatmap per part."""
    return [_PARTS_VIEW] + [f"heatmap: {n}" for n in names]


def legend_html(result: ShapeSegmentation, choice: str = _PARTS_VIEW) -> str:
    """The legend as HTML: a colour swatch, the part name and its count per part (or the heatmap's ramp)."""
    if choice != _PARTS_VIEW:
        part = html.escape(choice.removeprefix("heatmap: "))
        return (f'<div id="pa3d-legend-box" data-view="heatmap"><b>similarity to “{part}”</b><br>'
                '<span style="display:inline-block;width:160px;height:12px;background:linear-gradient(90deg,'
                'rgb(68,1,84),rgb(49,104,142),rgb(31,158,137),rgb(109,205,89),rgb(253,231,37))"></span>'
                "<br>low &rarr; high</div>")
    unit = "vertices" if result.shape.is_mesh else "points"
    rows = []
    for p in result.legend()["parts"]:
        r, g, b = p["color"]
        rows.append(
            f'<li class="pa3d-part" data-label="{p["label"]}"><span class="pa3d-swatch" '
            f'style="display:inline-block;width:14px;height:14px;margin-right:6px;vertical-align:middle;'
            f'background:rgb({r},{g},{b})"></span>{html.escape(p["name"])} <small>({p["points"]} {unit})</small>'
            "</li>"
        )
    unlabelled = int((result.labels < 0).sum())
    if unlabelled:
        rows.append(f'<li class="pa3d-part" data-label="-1"><span class="pa3d-swatch" style="display:inline-block;'
                    f'width:14px;height:14px;margin-right:6px;background:rgb(170,170,170)"></span>(no label) '
                    f"<small>({unlabelled} {unit})</small></li>")
    items = "".join(rows)
    return f'<div id="pa3d-legend-box" data-view="parts"><ul style="list-style:none;padding:0">{items}</ul></div>'


def _status(result: ShapeSegmentation) -> str:
    s = result.shape
    what = f"{len(s.vertices)} vertices, {len(s.faces)} faces" if s.is_mesh else f"{len(s.vertices)} points"
    msg = f"Segmented **{html.escape(s.path.name)}** ({what}) into {len(result.names)} parts " \
          f"with text model `{result.info.get('text_encoder')}`."
    if result.info.get("calibration") == "prior":
        msg += " Labels read after the per-shape prior correction."
    if result.info.get("untrained"):
        msg = ("⚠️ **UNTRAINED weights: the parts shown are meaningless.** " + _HOW_TO_GET_WEIGHTS + "\n\n" + msg)
    return msg


def _error(err: BaseException) -> str:
    text = str(err) if not isinstance(err, OSError) else f"{err.strerror or err}: {err.filename or ''}"
    return "❌ **Error:** " + html.escape(text.strip() or type(err).__name__)


def build_app(session: SegmentSession | None = None, **session_kwargs: Any) -> Any:
    """Build the Gradio Blocks page (not launched).

    Args:
        session: the logic; None builds a :class:`SegmentSession` from ``session_kwargs``.
        **session_kwargs: passed to :class:`SegmentSession`.

    Returns:
        ``gradio.Blocks``.
    """
    gr = _import_gradio()
    session = session or SegmentSession(**session_kwargs)
    untrained_note = "" if session.default_checkpoint else (
        "⚠️ **No trained weights found** (nothing under `runs/*/stage2/model`): results use UNTRAINED weights "
        "and are meaningless. " + _HOW_TO_GET_WEIGHTS
    )

    def on_run(upload, parts, checkpoint, trusted, text_model, up_axis, num_points, calibration):
        try:
            out = session.run(upload, parts, checkpoint=checkpoint, trusted=trusted, text_model=text_model,
                              up_axis=up_axis, num_points=int(num_points), calibration=calibration)
        except (SegmentError, ValueError, RuntimeError, OSError, ImportError) as err:
            return (None, "", None, _error(err), gr.update(choices=[_PARTS_VIEW], value=_PARTS_VIEW), None)
        state = {"result": out["result"], "folder": out["folder"]}
        return (out["view"], out["legend"], out["downloads"], out["status"],
                gr.update(choices=out["choices"], value=_PARTS_VIEW), state)

    def on_view(choice, state):
        if not state:
            return gr.update(), gr.update()
        try:
            path = session.view(state["result"], choice, state["folder"])
        except (SegmentError, ValueError, OSError) as err:
            return gr.update(), _error(err)
        return str(path), legend_html(state["result"], choice)

    with gr.Blocks(title="pa3d: zero-shot 3D part segmentation", analytics_enabled=False) as demo:
        gr.Markdown("# pa3d: zero-shot 3D part segmentation\nUpload a mesh or point cloud, name its parts, "
                    "and see each part on the shape (PatchAlign3D).")
        status = gr.Markdown(untrained_note, elem_id="pa3d-status")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Mesh or point cloud (" + " ".join(UPLOAD_SUFFIXES) + ")",
                                 file_types=list(UPLOAD_SUFFIXES), type="filepath", elem_id="pa3d-upload")
                parts = gr.Textbox(label="Part names (comma-separated)", placeholder="head, body, wing, foot",
                                   elem_id="pa3d-parts")
                with gr.Accordion("Model", open=not session.default_checkpoint):
                    checkpoint = gr.Textbox(label="Checkpoint (pa3d folder, official .pt, or hf://ORG/REPO "
                                                  "from the local cache; empty = untrained)",
                                            value=session.default_checkpoint, elem_id="pa3d-checkpoint")
                    trusted = gr.Checkbox(label="Trusted file: allow a legacy official .pt pickle (it can run "
                                                "code; tick only for files you trust)", value=False)
                    text_model = gr.Textbox(label="Text model", value=session.text_model, elem_id="pa3d-text-model")
                    up_axis = gr.Dropdown(["auto", "x", "y", "z"], value="auto", label="Up axis of the input")
                    num_points = gr.Slider(256, 8192, value=session.num_points, step=256, label="Points sampled")
                    calibration = gr.Radio(list(CALIBRATIONS), value="none", elem_id="pa3d-calibration",
                                           label="Labels: none = each point's most similar name; prior = first "
                                                 "correct for names that win most of the shape")
                run_btn = gr.Button("Segment", variant="primary", elem_id="pa3d-run")
            with gr.Column(scale=2):
                view = gr.Model3D(label="Result", elem_id="pa3d-view", height=480, clear_color=(1, 1, 1, 1))
                view_choice = gr.Radio([_PARTS_VIEW], value=_PARTS_VIEW, label="Colour by",
                                       elem_id="pa3d-view-choice")
                legend = gr.HTML("", elem_id="pa3d-legend")
                downloads = gr.File(label="Downloads: labelled mesh (GLB), PLY, NPZ", file_count="multiple",
                                    interactive=False, elem_id="pa3d-downloads")
        state = gr.State(None)
        run_btn.click(on_run, [upload, parts, checkpoint, trusted, text_model, up_axis, num_points, calibration],
                      [view, legend, downloads, status, view_choice, state])
        view_choice.change(on_view, [view_choice, state], [view, legend])
    demo.pa3d_session = session
    return demo


def _theme(gr):
    """The default theme with system fonts (no font download)."""
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    mono = ["ui-monospace", "SFMono-Regular", "monospace"]
    return gr.themes.Default(font=system, font_mono=mono)


def launch(
    host: str = "127.0.0.1",
    port: int | None = 7860,
    *,
    block: bool = True,
    quiet: bool = False,
    **session_kwargs: Any,
) -> Any:
    """Build and launch the app on ``host:port`` (127.0.0.1 by default: only this machine can connect).

    Args:
        host: the address to bind; ``0.0.0.0`` exposes the app to the network.
        port: the port (None: Gradio picks a free one from 7860).
        block: serve until interrupted (False: return at once, the server keeps running).
        quiet: do not print the URL.
        **session_kwargs: passed to :class:`SegmentSession`.

    Returns:
        The launched ``gradio.Blocks`` (``.local_url`` is the address).
    """
    gr = _import_gradio()
    demo = build_app(**session_kwargs)
    demo.queue(default_concurrency_limit=1)
    demo.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
        show_error=False, quiet=quiet, ssr_mode=False, theme=_theme(gr), footer_links=[],
        allowed_paths=[str(demo.pa3d_session.workdir)],
    )
    return demo
