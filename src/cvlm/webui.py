"""The interactive viewer, ``cvlm serve``: open an X-ray, read the report, see what each finding rests on.

The app logic lives in :class:`Viewer`, whose methods are plain functions of a per-browser
:class:`Session` (open an image, explain, compare, package the downloads); :func:`build_app` only lays
out Gradio components and maps those results onto them, so the logic is tested without a browser.

Safety: the server binds 127.0.0.1 unless told otherwise; uploads above a size limit are refused (by
Gradio before they are stored, and again here); everything it writes, Gradio's upload cache included,
lies under the working folder; each browser session writes into its own folder with a random name, so a
second user neither sees nor overwrites the first one's results.

Example:
    >>> viewer = Viewer(ViewerConfig(workdir="runs/serve", steps=4))  # doctest: +SKIP
    >>> session = viewer.new_session()  # doctest: +SKIP
    >>> opened = viewer.open_image(session, viewer.examples()[0][1], "phantom-captioner")  # doctest: +SKIP
    >>> chosen = opened.findings[:1]  # doctest: +SKIP
    >>> result = viewer.run_explanation(session, "phantom-captioner", chosen, [])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from cvlm.bundled import bundled_names
from cvlm.data import load_dataset
from cvlm.explain import Explainer, ExplainOptions
from cvlm.findings import ABNORMALITIES
from cvlm.outputs import Edit, Explanation, frames_overlay, heat_map
from cvlm.phantoms.world import write_world
from cvlm.readout import read_findings
from cvlm.xray import XrayReadError, read_xray

if TYPE_CHECKING:
    import gradio as gr

EXAMPLE_SEED = 20261203
"""Seed of the example world written at start (never used to train a bundled model)."""
EXAMPLE_COUNT = 16
UPLOAD_TYPES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff")
SESSIONS = "sessions"
GRADIO_CACHE = "gradio-cache"
DISPLAY_SIDE = 384
"""Images are shown upscaled (nearest neighbour) to this side, so that pixels stay pixels."""

Progress = Callable[[float, str], None]


class ViewerError(ValueError):
    """A message for the person at the browser: what went wrong and what to do."""


@dataclass
class ViewerConfig:
    """How the viewer runs.

    Attributes:
        workdir: The one folder it writes into (example world, sessions, Gradio's upload cache).
        generator: The generator selected at start: a bundled name, a folder or an adapter spec.
        model: Tailored diffusion model of ``generator`` (default: the bundled model of the same name).
        steps: DDIM steps T.
        max_upload_mb: Uploads larger than this are refused.
        device: Torch device of the models.
    """

    workdir: str | Path = "runs/serve"
    generator: str = "phantom-captioner"
    model: str | None = None
    steps: int = 50
    max_upload_mb: float = 20.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}.")
        if self.max_upload_mb <= 0:
            raise ValueError(f"max_upload_mb must be > 0, got {self.max_upload_mb}.")


@dataclass
class Session:
    """One browser session's state: its private folder and the image it has open.

    Attributes:
        folder: ``workdir/sessions/<random>``; everything this session writes goes here.
        image: The open image ``(H, W)`` float32 in [0, 1] (None before one is opened).
        name: What the image is called in the records.
        runs: Explanations made so far (numbers the run folders).
        last: The folder of the latest explanation.
    """

    folder: Path
    image: np.ndarray | None = field(default=None, repr=False)
    name: str = ""
    runs: int = 0
    last: Path | None = None


@dataclass
class Opened:
    """What the generator made of an opened image."""

    image: np.ndarray
    report: str
    findings: list[str]
    addable: list[str]


@dataclass
class Result:
    """One explanation, packaged for display and download.

    Attributes:
        explanation: The explanation (with its arrays).
        folder: Where it was saved (inside the session's folder).
        zip_path: The folder as a zip.
        figures: One PNG figure per edit, keyed by :func:`edit_label`.
    """

    explanation: Explanation
    folder: Path
    zip_path: Path
    figures: dict[str, Path]


# ------------------------------------------------------------------------------------------ helpers
def edit_label(edit: Edit) -> str:
    """``remove Pleural Effusion``: how an edit is named in the page."""
    return f"{edit.kind} {edit.finding}"


def check_upload(path: str | Path, max_upload_mb: float) -> Path:
    """Refuse an upload that is missing, too large or of a type the reader does not know.

    Raises:
        ViewerError: With a message for the user.
    """
    path = Path(path)
    if not path.is_file():
        raise ViewerError("The upload did not arrive; please choose the file again.")
    size_mb = path.stat().st_size / 2**20
    if size_mb > max_upload_mb:
        raise ViewerError(
            f"{path.name} is {size_mb:.1f} MB; this viewer takes files up to {max_upload_mb:g} MB "
            "(start it with a larger --max-upload-mb)."
        )
    suffix = path.suffix.lower()
    if suffix and suffix not in UPLOAD_TYPES:
        raise ViewerError(
            f"{path.name}: {suffix} files are not supported; upload a PNG, JPEG, TIFF or DICOM X-ray."
        )
    return path


def _display(image: np.ndarray) -> np.ndarray:
    """``(h, w)`` in [0, 1] or ``(h, w, 3)`` uint8 -> RGB uint8 upscaled to :data:`DISPLAY_SIDE`."""
    if image.ndim == 2:
        image = np.repeat((np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    scale = max(1, DISPLAY_SIDE // max(image.shape[:2]))
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def overlay(explanation: Explanation, edit: Edit, opacity: float) -> np.ndarray:
    """The input with the edit's difference heat map blended in at ``opacity`` and its frames drawn.

    Args:
        explanation: An explanation with its arrays.
        edit: One of its edits.
        opacity: 0 shows the input alone, 1 the heat map alone.

    Returns:
        ``(h, w, 3)`` uint8 RGB at the model's resolution.
    """
    base = frames_overlay(explanation.input, [])
    heat = heat_map(edit.difference).astype(np.float32)
    blended = ((1 - opacity) * base + opacity * heat).clip(0, 255).astype(np.uint8)
    boxes = _model_boxes(explanation, edit)
    for rank, (x0, y0, x1, y1) in enumerate(boxes):
        colour = (255, 40, 40) if rank == 0 else (255, 200, 0)
        cv2.rectangle(blended, (x0, y0), (x1 - 1, y1 - 1), colour, 1)
    return blended


def _model_boxes(explanation: Explanation, edit: Edit) -> list[list[int]]:
    """Frames (stored in original pixels) in the model's pixels."""
    h, w = explanation.input.shape
    sy, sx = explanation.original_size[0] / h, explanation.original_size[1] / w
    return [
        [round(f.box[0] / sx), round(f.box[1] / sy), round(f.box[2] / sx), round(f.box[3] / sy)]
        for f in edit.frames
    ]


def verdict(edit: Edit) -> str:
    """The cyclic verdict and collateral of one edit, in a sentence or two (Markdown)."""
    did = "no longer writes it" if edit.kind == "remove" else "now writes it"
    didnt = "still writes it" if edit.kind == "remove" else "still does not write it"
    text = (
        f"**{edit.kind} {edit.finding}: cycle closed**, the generator {did} (strength {edit.strength:g})."
        if edit.success
        else f"**{edit.kind} {edit.finding}: cycle NOT closed**, the generator {didnt} "
        f"(strongest edit tried: {edit.strength:g}); the frames show what changed, not what it relies on."
    )
    lost, gained = edit.collateral["lost"], edit.collateral["gained"]
    if lost or gained:
        text += f" Collateral: lost {', '.join(lost) or 'nothing'}; gained {', '.join(gained) or 'nothing'}."
    else:
        text += " No other finding changed."
    if not edit.baseline_holds:
        text += " The round trip alone already flipped this finding: the verdict says little."
    return text


def trust_text(explanation: Explanation) -> str:
    """Reconstruction PSNR as a trust signal, and plainly when the input is outside what the models know."""
    head = f"Reconstruction PSNR **{explanation.reconstruction_psnr:.1f} dB**. "
    unchecked = any("could not be checked" in note for note in explanation.notes)
    if explanation.trusted and unchecked:
        head += (
            f"**Trust not checked**: the model has no calibration at T={explanation.settings.get('steps')}; "
            "read these counterfactuals with care."
        )
    elif explanation.trusted:
        head += "Trusted: the model reconstructs this image as well as the images it knows."
    else:
        head += (
            "**UNTRUSTED: this input lies outside what the models know** (the bundled models know only "
            "the synthetic phantom world; on real radiographs they write confident nonsense). Do not read "
            "these counterfactuals as evidence."
        )
    notes = "".join(f"\n- {note}" for note in explanation.notes)
    return head + notes


def write_figure(explanation: Explanation, edit: Edit, path: Path) -> Path:
    """Write the figure: input, counterfactual, difference heat map and frames, side by side (PNG)."""
    panels = [
        ("input", frames_overlay(explanation.input, [])),
        ("counterfactual", frames_overlay(edit.counterfactual, [])),
        ("what changed", heat_map(edit.difference)),
        ("frames", overlay(explanation, edit, 0.0)),
    ]
    tiles = []
    for title, image in panels:
        tile = _display(image)
        band = np.full((28, tile.shape[1], 3), 255, np.uint8)
        cv2.putText(band, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.vstack([band, tile]))
    figure = np.hstack(tiles)
    band = np.full((30, figure.shape[1], 3), 255, np.uint8)
    caption = f"{explanation.generator}: {edit_label(edit)} - " + (
        "cycle closed" if edit.success else "cycle NOT closed"
    )
    cv2.putText(band, caption, (6, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack([band, figure])[..., ::-1])
    return path


def zip_folder(folder: Path, path: Path) -> Path:
    """Zip ``folder`` (its name as the top folder inside) into ``path``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, Path(folder.name) / file.relative_to(folder))
    return path


# ------------------------------------------------------------------------------------------ viewer
class Viewer:
    """The app's logic, shared by every session: models, example world, session folders.

    Args:
        config: :class:`ViewerConfig`.
    """

    def __init__(self, config: ViewerConfig) -> None:
        self.config = config
        self.root = Path(config.workdir)
        self.sessions = self.root / SESSIONS
        self.sessions.mkdir(parents=True, exist_ok=True)
        # Bundled generators that have a bundled tailored model, plus the configured one.
        paired = set(bundled_names("diffusion"))
        self.models: dict[str, str] = {g: g for g in bundled_names("generators") if g in paired}
        if config.model is not None:
            self.models[config.generator] = config.model
        elif config.generator not in self.models:
            raise ValueError(
                f"No tailored model for generator {config.generator!r}: give --model (its diffusion folder)."
            )
        self._explainers: dict[str, Explainer] = {}
        # One explanation at a time: two CPU-bound runs would only slow both. Reading a report is quick
        # and runs beside it, so the page stays usable while an explanation (or a cancelled one) runs.
        self._computing = threading.Lock()
        self._loading = threading.Lock()
        self._examples: list[tuple[str, Path]] | None = None

    @property
    def generators(self) -> list[str]:
        """Generator choices, the configured one first."""
        return [self.config.generator, *sorted(g for g in self.models if g != self.config.generator)]

    # -- examples -----------------------------------------------------------------------------------
    def examples(self) -> list[tuple[str, Path]]:
        """``(label, path)`` of the bundled phantom examples, written into the workdir on first use."""
        if self._examples is None:
            world = self.root / "examples"
            if not (world / "files").is_dir():
                write_world(world, n=EXAMPLE_COUNT, seed=EXAMPLE_SEED)
            records = sorted(load_dataset(world), key=lambda r: (not r.true_findings, r.dicom_id))
            self._examples = [
                (
                    f"phantom {i + 1}: true findings {', '.join(r.true_findings) or 'none'}",
                    Path(r.image_path),
                )
                for i, r in enumerate(records)
            ]
        return self._examples

    def example_path(self, label: str) -> Path:
        """The file of an example label.

        Raises:
            ViewerError: For an unknown label.
        """
        for name, path in self.examples():
            if name == label:
                return path
        raise ViewerError("Pick one of the listed examples.")

    # -- sessions -----------------------------------------------------------------------------------
    def new_session(self) -> Session:
        """A session with a fresh folder of random name under ``workdir/sessions``."""
        folder = self.sessions / secrets.token_hex(16)
        folder.mkdir(parents=True)
        return Session(folder=folder)

    def close_session(self, session: Session | None) -> None:
        """Remove a session's folder (called when its browser tab is gone)."""
        if session is not None and session.folder.parent == self.sessions:
            shutil.rmtree(session.folder, ignore_errors=True)

    # -- models -------------------------------------------------------------------------------------
    def explainer(self, generator: str) -> Explainer:
        """The loaded explainer of a generator choice (loaded once).

        Raises:
            ViewerError: For a generator that is not offered.
        """
        if generator not in self.models:
            raise ViewerError(f"Unknown generator {generator!r}; choose one of {', '.join(self.generators)}.")
        with self._loading:
            if generator not in self._explainers:
                self._explainers[generator] = Explainer.load(
                    generator,
                    self.models[generator],
                    options=ExplainOptions(steps=self.config.steps),
                    device=self.config.device,
                )
        return self._explainers[generator]

    # -- the actions ----------------------------------------------------------------------------------
    def open_image(self, session: Session, path: str | Path, generator: str, upload: bool = False) -> Opened:
        """Read an image (an example or an upload) and the report the generator writes for it.

        Args:
            session: The caller's session; the image becomes its open image.
            path: The file.
            generator: A generator choice.
            upload: The file came from the browser (size and type are checked first).

        Raises:
            ViewerError: For a file that is too large, of an unsupported type or unreadable.
        """
        path = check_upload(path, self.config.max_upload_mb) if upload else Path(path)
        try:
            image = read_xray(path)
        except XrayReadError as err:
            # The reader names the full path; the page shows only the file's name (no server paths).
            reason = str(err).replace(str(path), path.name).removeprefix(f"{path.name}: ")
            raise ViewerError(f"Cannot read {path.name}: {reason}") from None
        session.image, session.name = image, path.name
        return self.read_report(session, generator)

    def read_report(self, session: Session, generator: str) -> Opened:
        """The open image's report by ``generator``, its findings, and the findings it could add.

        Raises:
            ViewerError: When no image is open.
        """
        if session.image is None:
            raise ViewerError("Open an example or upload an X-ray first.")
        explainer = self.explainer(generator)
        readout = read_findings(
            explainer.generator, [session.image], explainer.labeler, explainer.options.policy
        )
        findings = list(readout.findings[0])
        addable = [f for f in ABNORMALITIES if f not in findings]
        return Opened(session.image, readout.reports[0], findings, addable)

    def run_explanation(
        self,
        session: Session,
        generator: str,
        remove: Sequence[str],
        add: Sequence[str],
        progress: Progress | None = None,
    ) -> Result:
        """Explain the open image: remove and add the chosen findings, save, zip and draw the figures.

        Args:
            session: The caller's session (results go into its folder only).
            generator: A generator choice.
            remove: Findings to remove (ones the generator writes).
            add: Findings to add.
            progress: Called with (fraction, message) as the stages go by.

        Raises:
            ViewerError: When no image is open or nothing was chosen.
        """
        tell = progress or (lambda fraction, message: None)
        if session.image is None:
            raise ViewerError("Open an example or upload an X-ray first.")
        if not remove and not add:
            raise ViewerError("Tick at least one finding to remove (or choose one to add).")
        tell(0.05, f"loading {generator}")
        with self._computing:
            explainer = self.explainer(generator)
            options = dataclasses.replace(explainer.options, remove=list(remove), add=list(add))
            tell(
                0.15,
                f"inverting and editing ({self.config.steps} DDIM steps, {len(remove) + len(add)} edits)",
            )
            explanation = dataclasses.replace(explainer, options=options)(session.image, name=session.name)
        tell(0.85, "saving the folder, the zip and the figures")
        session.runs += 1
        run = session.folder / f"run-{session.runs:03d}-{_slug(generator)}"
        folder = explanation.save(run / "explanation")
        figures = {
            edit_label(edit): write_figure(explanation, edit, run / f"figure-{edit.slug}.png")
            for edit in explanation.edits
        }
        zip_path = zip_folder(folder, run / "explanation.zip")
        session.last = run
        tell(1.0, "done")
        return Result(explanation, folder, zip_path, figures)

    def compare(
        self,
        session: Session,
        generators: Sequence[str],
        add: Sequence[str] = (),
        progress: Progress | None = None,
    ) -> list[Result]:
        """Explain the open image with each generator: every finding it writes removed, ``add`` added.

        Raises:
            ViewerError: When no image is open, or a generator writes nothing and nothing is added.
        """
        tell = progress or (lambda fraction, message: None)
        results = []
        for i, generator in enumerate(generators):
            written = self.read_report(session, generator).findings

            def part(fraction: float, message: str, i: int = i, generator: str = generator) -> None:
                tell((i + fraction) / len(generators), f"{generator}: {message}")

            if not written and not add:
                raise ViewerError(f"{generator} writes no finding here: choose a finding to add.")
            results.append(self.run_explanation(session, generator, written, add, part))
        return results


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(text).name)[:40] or "generator"


# ------------------------------------------------------------------------------------------ layout
HEADER = """# cvlm viewer
Open an X-ray, read what the report generator wrote, tick the findings to remove (or choose ones to add),
and press **Explain**: a counterfactual X-ray is made without (with) each finding, the same generator reads
it again (the cycle), and the pixels that changed are framed. The bundled models know only a synthetic
phantom world: on a real radiograph they are untrusted, and the page says so."""


def build_app(viewer: Viewer) -> gr.Blocks:
    """The Gradio page over ``viewer`` (layout and wiring only).

    Returns:
        A ``gradio.Blocks``; launch it with :func:`serve`.
    """
    # Imported here, not at the top: gradio fixes its cache folder (GRADIO_TEMP_DIR) when it is first
    # imported, and serve() points that into the workdir before calling this.
    import gradio as gr

    examples = [label for label, _ in viewer.examples()]
    generators = viewer.generators

    def session_of(state: Session | None) -> Session:
        return state if state is not None else viewer.new_session()

    def opened_updates(state: Session, opened: Opened, message: str) -> tuple:
        return (
            state,
            _display(opened.image),
            opened.report,
            gr.update(choices=opened.findings, value=[]),
            gr.update(choices=opened.addable, value=[]),
            message,
        )

    def failed(state: Session, message: str) -> tuple:
        return (state, None, "", gr.update(choices=[], value=[]), gr.update(choices=[], value=[]), message)

    def on_example(state: Session | None, label: str, generator: str) -> tuple:
        state = session_of(state)
        try:
            opened = viewer.open_image(state, viewer.example_path(label), generator)
        except ViewerError as err:
            return failed(state, f"**Error:** {err}")
        return opened_updates(state, opened, f"Opened {label}. {_written(opened)}")

    def on_upload(state: Session | None, file: str | None, generator: str) -> tuple:
        state = session_of(state)
        if file is None:
            return failed(state, "")
        try:
            opened = viewer.open_image(state, file, generator, upload=True)
        except ViewerError as err:
            state.image = None
            return failed(state, f"**Error:** {err}")
        return opened_updates(state, opened, f"Opened {Path(file).name}. {_written(opened)}")

    def on_generator(state: Session | None, generator: str) -> tuple:
        state = session_of(state)
        try:
            opened = viewer.read_report(state, generator)
        except ViewerError as err:
            return failed(state, str(err))
        return opened_updates(state, opened, f"{generator}: {_written(opened)}")

    def on_explain(
        state: Session | None,
        generator: str,
        remove: list[str],
        add: list[str],
        opacity: float,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's way of asking for a progress bar)
    ) -> tuple:
        state = session_of(state)
        try:
            started = time.perf_counter()
            result = viewer.run_explanation(state, generator, remove, add, lambda f, m: progress(f, desc=m))
        except ViewerError as err:
            return (state, None, f"**Error:** {err}", *empty_result())
        seconds = time.perf_counter() - started
        done = f"Done (run {state.runs}): {len(result.explanation.edits)} edit(s) in {seconds:.1f} s."
        return (state, result, done, *result_updates(result, None, opacity))

    def on_edit(result: Result | None, label: str, opacity: float) -> tuple:
        if result is None:
            return empty_result()
        return result_updates(result, label, opacity)

    def on_opacity(result: Result | None, label: str, opacity: float) -> np.ndarray | None:
        if result is None:
            return None
        return _display(overlay(result.explanation, _edit(result, label), opacity))

    def on_compare(
        state: Session | None,
        first: str,
        second: str,
        add: list[str],
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple:
        state = session_of(state)
        try:
            results = viewer.compare(state, [first, second], add, lambda f, m: progress(f, desc=m))
        except ViewerError as err:
            return (state, f"**Error:** {err}", *([None, ""] * 2))
        cells = []
        for result in results:
            e = result.explanation
            edit = e.edits[0] if e.edits else None
            text = f"### {e.generator}\n{trust_text(e)}\n\n**Report:** {e.report}\n\n" + "\n\n".join(
                verdict(x) for x in e.edits
            )
            cells += [_display(overlay(e, edit, 0.5)) if edit is not None else None, text]
        return (state, "Done.", *cells)

    def empty_result() -> tuple:
        return (gr.update(choices=[], value=None), None, None, None, "", "", "", None, None)

    def result_updates(result: Result, label: str | None, opacity: float) -> tuple:
        e = result.explanation
        if not e.edits:
            return (
                gr.update(choices=[], value=None),
                None,
                None,
                None,
                "No edit was made.",
                "",
                trust_text(e),
                str(result.zip_path),
                None,
            )
        shown = _edit(result, label)
        return (
            gr.update(choices=[edit_label(x) for x in e.edits], value=edit_label(shown)),
            _display(shown.counterfactual),
            _display(heat_map(shown.difference)),
            _display(overlay(e, shown, opacity)),
            verdict(shown),
            shown.regenerated_report,
            trust_text(e),
            str(result.zip_path),
            str(result.figures[edit_label(shown)]),
        )

    # Gradio's copies of served files are dropped after an hour (checked hourly).
    with gr.Blocks(title="cvlm viewer", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        state = gr.State(None, delete_callback=viewer.close_session)
        result_state = gr.State(None)
        gr.Markdown(HEADER)
        with gr.Row():
            with gr.Column(scale=1):
                generator = gr.Dropdown(generators, value=generators[0], label="Report generator")
                example = gr.Dropdown(examples, value=examples[0], label="Bundled phantom example")
                open_example = gr.Button("Open example", elem_id="open-example")
                upload = gr.File(
                    label=f"…or upload a PNG, JPEG, TIFF or DICOM (up to {viewer.config.max_upload_mb:g} MB)",
                    file_types=list(UPLOAD_TYPES),
                    type="filepath",
                    elem_id="upload",
                )
                status = gr.Markdown("Open an example or upload an X-ray.", elem_id="status")
            with gr.Column(scale=1):
                image = gr.Image(label="X-ray", interactive=False, elem_id="input-image")
            with gr.Column(scale=1):
                report = gr.Textbox(label="Report", lines=8, interactive=False, elem_id="report")
                remove = gr.CheckboxGroup([], label="Findings written: tick to remove", elem_id="remove")
                add = gr.Dropdown([], multiselect=True, label="Findings to add", elem_id="add")
                with gr.Row():
                    explain = gr.Button("Explain", variant="primary", elem_id="explain")
                    cancel = gr.Button("Cancel", elem_id="cancel")
        gr.Markdown("## Result")
        trust = gr.Markdown(elem_id="trust")
        edit = gr.Dropdown([], label="Edit shown", elem_id="edit")
        with gr.Row():
            counterfactual = gr.Image(label="Counterfactual", interactive=False, elem_id="counterfactual")
            difference = gr.Image(label="What changed (difference)", interactive=False, elem_id="difference")
            frames = gr.Image(label="Frames over the input", interactive=False, elem_id="frames")
        opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Heat map opacity over the input (frames)")
        verdict_box = gr.Markdown(elem_id="verdict")
        regenerated = gr.Textbox(
            label="Regenerated report", lines=6, interactive=False, elem_id="regenerated"
        )
        with gr.Row():
            zip_file = gr.File(label="Explanation folder (zip)", interactive=False, elem_id="zip")
            figure = gr.File(label="Figure (PNG)", interactive=False, elem_id="figure")
        with gr.Accordion("Compare two generators on this image", open=False):
            gr.Markdown("Each generator removes every finding it writes (plus any findings chosen to add).")
            with gr.Row():
                first = gr.Dropdown(generators, value=generators[0], label="Generator A")
                second = gr.Dropdown(generators, value=generators[-1], label="Generator B")
                compare = gr.Button("Compare", elem_id="compare")
            compare_status = gr.Markdown()
            with gr.Row():
                with gr.Column():
                    image_a = gr.Image(label="A: first edit, heat map and frames", interactive=False)
                    text_a = gr.Markdown()
                with gr.Column():
                    image_b = gr.Image(label="B: first edit, heat map and frames", interactive=False)
                    text_b = gr.Markdown()

        opened_outputs = [state, image, report, remove, add, status]
        result_outputs = [
            edit,
            counterfactual,
            difference,
            frames,
            verdict_box,
            regenerated,
            trust,
            zip_file,
            figure,
        ]
        open_example.click(on_example, [state, example, generator], opened_outputs)
        upload.upload(on_upload, [state, upload, generator], opened_outputs)
        generator.input(on_generator, [state, generator], opened_outputs)
        run = explain.click(
            on_explain,
            [state, generator, remove, add, opacity],
            [state, result_state, status, *result_outputs],
        )
        cancel.click(
            lambda: (
                "Cancelled. A computation already under way finishes in the background (its result is "
                "discarded) before the next one starts."
            ),
            None,
            status,
            cancels=[run],
        )
        edit.input(on_edit, [result_state, edit, opacity], result_outputs)
        opacity.change(on_opacity, [result_state, edit, opacity], frames)
        compare.click(
            on_compare, [state, first, second, add], [state, compare_status, image_a, text_a, image_b, text_b]
        )
    return app


def _written(opened: Opened) -> str:
    if not opened.findings:
        return "The generator writes no finding; choose one to add."
    return f"The generator writes: {', '.join(opened.findings)}. Tick those to remove."


def _edit(result: Result, label: str | None) -> Edit:
    edits = result.explanation.edits
    return next((e for e in edits if edit_label(e) == label), edits[0])


def serve(config: ViewerConfig, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Write the examples, build the page and serve it until interrupted.

    Args:
        config: :class:`ViewerConfig`.
        host: Address to bind; 127.0.0.1 keeps the page on this machine.
        port: TCP port.
    """
    viewer = Viewer(config)
    # Gradio stores uploads and the files it serves under GRADIO_TEMP_DIR: keep them in the workdir.
    cache = viewer.root / GRADIO_CACHE
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    viewer.examples()
    app = build_app(viewer)
    app.queue(default_concurrency_limit=1, max_size=32)
    app.launch(
        server_name=host,
        server_port=port,
        max_file_size=f"{config.max_upload_mb:g}mb",
        allowed_paths=[str(viewer.sessions)],
        footer_links=[],
        show_error=True,
        quiet=False,
    )
