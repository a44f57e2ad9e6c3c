"""``explain()``: which pixels made the generator write each finding (CVLM, Fang, Jin et al., IJCAI 2025).

The numbered steps of :meth:`Explainer.__call__` follow DESIGN.md section 1:

1. check the input (an xray-convention array or a file);
2. report: r = G(x);
3. findings: F = labeler(r) under the uncertainty policy (:mod:`cvlm.readout`), prompt P = prompt(F);
4. invert: z_T from DDIM inversion of VAE(x) with P (:mod:`cvlm.counterfactual`);
5. edit: every requested edit sampled from z_T in one batch, with the reconstruction beside them;
6. cycle: G reads every counterfactual (:mod:`cvlm.cyclic`); with adaptive strength, the edits whose
   cycle did not close are resampled at the next strength of the schedule (from the same z_T) until
   they close or the schedule ends, and the weakest closing edit is kept;
7. frames: |reconstruction - counterfactual| -> blur -> threshold -> the K largest boxes (:mod:`cvlm.frames`),
   mapped back to the original image's pixels;
8. package: an :class:`cvlm.outputs.Explanation`, flagged untrusted when the reconstruction is far worse
   than the model's validated reconstruction (the input lies outside what the model knows).

:func:`explain_files` runs it over files and folders (``cvlm explain``): one folder per image written
atomically, one line per input in ``index.jsonl``, finished images skipped on a rerun, unreadable ones
reported and the rest explained, and shards over processes under ``accelerate launch``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cvlm.bundled import resolve_model
from cvlm.counterfactual import (
    BACKGROUNDS,
    DEFAULT_LEVER,
    DEFAULT_SCHEDULE,
    HOLD_STRENGTH,
    LEVERS,
    LOCALITIES,
    SMALLER_MASKS,
    SPARE_VARIANTS,
    Blend,
    Counterfactuals,
    EditRequest,
    check_finding_names,
    counterfactuals,
    model_input,
    plan_edits,
    sample_rows,
    stronger_strength,
    weaker_strength,
)
from cvlm.cyclic import CycleResult, close_cycle, judge
from cvlm.diffusion.components import DiffusionComponents, load_components
from cvlm.environment import versions
from cvlm.frames import (
    DEFAULT_THRESHOLD,
    TOP_K,
    FrameThresholds,
    check_level,
    extract_frames,
    scale_frames,
)
from cvlm.generators import GeneratorError, ReportGenerator, load_generator, reader
from cvlm.generators.features import FindingReader
from cvlm.generators.files import collect_images
from cvlm.labeler import Labeler, load_labeler
from cvlm.metrics import psnr
from cvlm.outputs import EXPLANATION_FILE, Edit, Explanation
from cvlm.prompts import DEFAULT_POLICY, UncertaintyPolicy, build_prompt
from cvlm.readout import edit_report, read_findings
from cvlm.safeio import OutputWriteError, append_lines, explain_os_error
from cvlm.xray import XrayReadError, read_xray

logger = logging.getLogger(__name__)

INDEX = "index.jsonl"
PROMPT_STYLES = ("structured", "raw")
TRUST_MARGIN_DB = 4.0
"""An input whose reconstruction PSNR falls more than this below the model's validated PSNR is untrusted."""


@dataclass
class ExplainOptions:
    """How to explain (all recorded in every explanation).

    Attributes:
        steps: DDIM steps T for inversion and sampling (the paper's 50).
        remove: ``"all"`` written findings (the paper), a list of findings, or None for none.
        add: Findings to add (those not written).
        lever: Edit-strength lever (:data:`cvlm.counterfactual.LEVERS`).
        schedule: Strengths tried in order; None = the lever's default schedule.
        adaptive: Escalate through the schedule for edits whose cycle did not close (False: the first
            strength only, the paper's edit).
        threshold: Frame threshold L on 0..255, ``"auto"`` (Otsu per edit) or ``"model"`` (default: the
            tailored model's level per finding, :class:`cvlm.frames.FrameThresholds`, from its
            ``frames.json``; :data:`cvlm.frames.DEFAULT_THRESHOLD` for a finding it lacks, or without one).
        top_k: Frames kept per edit.
        rank: Frame order, ``"area"`` (the paper's) or ``"mass"`` (:func:`cvlm.frames.extract_frames`).
        retry_masks: The masks adaptive strength samples its stronger retries in: ``"same"`` (each edit's
            own mask) or a name of :data:`cvlm.counterfactual.SMALLER_MASKS` (``"core"``: the mask's
            strongest half, so the stronger push stays where the words act most).
        locality: ``"mask"`` (default: edit only where the model's prediction answers the edited words,
            :func:`cvlm.counterfactual.invert_with_masks`) or ``"none"`` (edit everywhere, the paper's).
        prompts: ``"structured"`` (the generator's findings as cvlm's structured prompt, what the tailored
            models are trained on) or ``"raw"`` (the report text itself, for a model trained with
            ``cvlm prepare --prompts raw``; an edit drops the sentences that name the finding,
            :func:`cvlm.readout.edit_report`).
        spare: Variants tried, in order, for an edit that closed its cycle with collateral (another
            finding changed too); the first that closes it without collateral replaces it
            (:data:`cvlm.counterfactual.SPARE_VARIANTS`; empty: keep the first edit that closes). ``hold``
            needs G's finding logits; for a generator without them it is left out, with a warning.
        batched: Sample all edits of an image in one UNet batch (False: one at a time, less memory).
        fixed_point: Fixed-point iterations per inversion step (0 = plain DDIM inversion).
        seed: Seeds torch before each image (the DDIM path itself is deterministic).
        policy: How uncertain mentions count as written.
        trust_margin_db: See :data:`TRUST_MARGIN_DB`.
    """

    steps: int = 50
    remove: str | Sequence[str] | None = "all"
    add: Sequence[str] = ()
    lever: str = DEFAULT_LEVER
    schedule: Sequence[float] | None = None
    adaptive: bool = True
    threshold: float | str = "model"
    top_k: int = TOP_K
    rank: str = "area"
    retry_masks: str = "same"
    locality: str = "mask"
    background: str = "reconstruction"
    spare: Sequence[str] = ("keep", "core", "weaker", "hold")
    prompts: str = "structured"
    batched: bool = True
    fixed_point: int = 0
    seed: int = 0
    policy: UncertaintyPolicy | str = DEFAULT_POLICY
    trust_margin_db: float = TRUST_MARGIN_DB

    def __post_init__(self) -> None:
        if self.lever not in LEVERS:
            raise ValueError(f"Unknown strength lever {self.lever!r}; choose one of {', '.join(LEVERS)}.")
        self.schedule = tuple(float(s) for s in (self.schedule or DEFAULT_SCHEDULE[self.lever]))
        if not self.schedule or any(s < 1.0 for s in self.schedule):
            raise ValueError(f"Strengths must be >= 1, got {self.schedule}.")
        if self.locality not in LOCALITIES:
            raise ValueError(f"locality must be one of {', '.join(LOCALITIES)}, got {self.locality!r}.")
        if self.retry_masks not in ("same", *SMALLER_MASKS):
            choices = ", ".join(("same", *SMALLER_MASKS))
            raise ValueError(f"retry_masks must be one of {choices}, got {self.retry_masks!r}.")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}, got {self.background!r}.")
        if self.prompts not in PROMPT_STYLES:
            raise ValueError(f"prompts must be one of {', '.join(PROMPT_STYLES)}, got {self.prompts!r}.")
        self.spare = tuple(self.spare)
        unknown = [v for v in self.spare if v not in SPARE_VARIANTS]
        if unknown:
            choices = ", ".join(SPARE_VARIANTS)
            raise ValueError(f"Unknown spare variant {unknown[0]!r}; choose from {choices}.")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}.")
        self.threshold = check_level(self.threshold, ("model", "auto"))
        if self.remove not in ("all", None):
            self.remove = check_finding_names(self.remove)
        self.add = check_finding_names(self.add)
        self.policy = UncertaintyPolicy.parse(self.policy)

    @property
    def strengths(self) -> tuple[float, ...]:
        """The strengths actually tried: the whole schedule when adaptive, else its first."""
        return tuple(self.schedule) if self.adaptive else tuple(self.schedule[:1])

    def to_dict(self) -> dict[str, Any]:
        """A JSON record."""
        record = asdict(self)
        record.update(policy=self.policy.value, schedule=list(self.schedule), add=list(self.add))
        return record


TRUST_FILE = "trust.json"
"""Beside a model's ``config.json``: how it inverts images it knows (:func:`calibrate_trust`)."""
NOISE_Z_LIMIT = 6.0
"""z_T whose standard deviation lies more than this many calibration SDs from their mean is atypical."""


def _validated_psnr(components: DiffusionComponents) -> float | None:
    validation = components.info.get("validation") or {}
    value = validation.get("psnr")
    return float(value) if value is not None else None


def read_trust(model_dir: str | Path) -> dict[str, Any] | None:
    """A model's trust calibration, or None."""
    path = Path(model_dir) / TRUST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@torch.no_grad()
def calibrate_trust(model: str | Path, data: str | Path, n: int = 60, steps: int = 50) -> dict[str, Any]:
    """Measure how a model inverts images it knows, and write ``trust.json`` into its folder.

    Each of ``n`` images of ``data`` (a phantom world or an image folder of the model's domain) is
    inverted with the prompt of its true findings (the world's truth; none for a plain folder) and
    resampled. In-domain inversions end in z_T of a characteristic spread; an image the model never saw
    the like of (a real radiograph shown a phantom model) lands elsewhere (docs/explain.md).

    Returns:
        ``{"steps", "n", "data", "noise_std": {"mean", "sd", "min", "max"}, "psnr": {...}}``.
    """
    from cvlm.counterfactual import invert_image
    from cvlm.data import load_dataset

    model_dir = resolve_model(model, "diffusion")
    components = load_components(model_dir).eval()
    records = load_dataset(data)[:n]
    stds, psnrs = [], []
    for record in tqdm(records, desc="calibrate trust", unit="img"):
        image = read_xray(record.image_path)
        findings = list(record.true_findings)
        inversion = invert_image(components, image, findings, steps)
        recon = sample_rows(components, inversion.noise, [build_prompt(findings)], None, steps)[0]
        stds.append(float(inversion.noise.std()))
        psnrs.append(psnr(model_input(components, image), recon))

    def spread(values: list[float]) -> dict[str, float]:
        return {
            "mean": float(np.mean(values)),
            "sd": float(np.std(values)),
            "min": min(values),
            "max": max(values),
        }

    record = {
        "steps": steps,
        "n": len(stds),
        "data": str(data),
        "noise_std": spread(stds),
        "psnr": spread(psnrs),
    }
    (model_dir / TRUST_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


@dataclass
class Explainer:
    """A generator, its tailored model and a labeler, loaded once; call it on one image.

    Attributes:
        generator: The report generator to explain.
        components: Its tailored diffusion model.
        model_name: How the model was named (bundled name or folder), for the records.
        labeler: The labeler that reads reports (default: the rule-based one).
        options: :class:`ExplainOptions`.
        trust: The model's trust calibration (:func:`calibrate_trust`), if it has one.
        reader: G's finding logits (:func:`cvlm.generators.reader`), for the ``generator`` lever and the
            ``hold`` variant; None: built from ``generator`` where the options need it.
        frame_thresholds: The frame threshold per finding; None: from the options (``"model"`` without a
            model folder: :data:`cvlm.frames.DEFAULT_THRESHOLD`; :meth:`load` reads the folder's).
    """

    generator: ReportGenerator
    components: DiffusionComponents
    model_name: str
    labeler: Labeler = field(default_factory=lambda: load_labeler("rules"))
    options: ExplainOptions = field(default_factory=ExplainOptions)
    trust: dict[str, Any] | None = None
    reader: FindingReader | None = None
    frame_thresholds: FrameThresholds | None = None

    def __post_init__(self) -> None:
        if self.frame_thresholds is None:
            level = self.options.threshold
            self.frame_thresholds = FrameThresholds(DEFAULT_THRESHOLD if level == "model" else level)
        # The generator lever and the hold variant steer by G's finding logits: refuse the lever for a
        # generator without them now, not after the first image; leave the variant out, and say so.
        opts = self.options
        if self.reader is None and (opts.lever == "generator" or "hold" in opts.spare):
            try:
                self.reader = reader(self.generator)
            except GeneratorError:
                if opts.lever == "generator":
                    raise
                logger.warning(
                    "%s offers no finding logits: the 'hold' spare variant is left out.", self.generator.name
                )
                self.options = replace(opts, spare=tuple(v for v in opts.spare if v != "hold"))

    @classmethod
    def load(
        cls,
        generator: str | ReportGenerator,
        model: str | Path,
        labeler: Labeler | None = None,
        options: ExplainOptions | None = None,
        device: str | None = None,
    ) -> Explainer:
        """Load a generator (bundled name, folder or adapter spec) and a model (bundled name or folder)."""
        gen = load_generator(generator, device=device) if isinstance(generator, str) else generator
        model_dir = resolve_model(model, "diffusion")
        components = load_components(model_dir, device or "cpu").eval()
        labeler = labeler or load_labeler("rules")
        options = options or ExplainOptions()
        # "model": the folder's calibrated level per finding; a fixed or "auto" level applies to every one.
        levels = FrameThresholds.read(model_dir) if options.threshold == "model" else None
        return cls(
            gen, components, str(model), labeler, options, read_trust(model_dir), frame_thresholds=levels
        )

    @torch.no_grad()
    def __call__(self, image: np.ndarray | str | Path, name: str | None = None) -> Explanation:
        """Explain one X-ray (see the module docstring for the steps).

        Args:
            image: An xray-convention array ``(H, W)`` float32 in [0, 1], or a file
                (:func:`cvlm.xray.read_xray`).
            name: What to record as the image (default: the path, or ``"<array>"``).

        Returns:
            An :class:`Explanation` with its arrays.

        Raises:
            XrayReadError: If the file cannot be read.
            ValueError: If the array is not in the xray convention.
        """
        # oneDNN's convolutions sum in an order that depends on the thread count (the VAE's output
        # differed by 1e-6 between 1 and 2 threads); torch's own convolutions with MKL in strict CNR
        # mode (cvlm.threads) do not. No cost: the VAE is 2x slower, the UNet that dominates a little
        # faster (T=50, 2 threads: 7.0 s per image against 7.6 s with oneDNN).
        with _without_onednn():
            return self._explain(image, name)

    def _explain(self, image: np.ndarray | str | Path, name: str | None) -> Explanation:
        """The steps of :meth:`__call__`."""
        started = time.perf_counter()
        opts = self.options
        torch.manual_seed(opts.seed)

        # 1. Check the input.
        if isinstance(image, (str, Path)):
            name = name or str(image)
            image = read_xray(image)
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2 or not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ValueError(
                "image must be an (H, W) float array in [0, 1] (read it with cvlm.xray.read_xray)."
            )

        # 2-3. Report, findings, prompt.
        readout = read_findings(self.generator, [image], self.labeler, opts.policy)
        report, findings = readout.reports[0], readout.findings[0]
        requests = plan_edits(findings, opts.remove, opts.add)
        source_text = None
        if opts.prompts == "raw":
            source_text = report
            requests = [
                replace(
                    r,
                    source_text=report,
                    text=edit_report(report, r.finding, r.kind, self.labeler, opts.policy),
                )
                for r in requests
            ]

        # 4-5. Invert once; the reconstruction and every edit at the first strength in one batch.
        strengths = opts.strengths
        cf = counterfactuals(
            self.components,
            image,
            requests,
            opts.steps,
            strengths[0],
            opts.lever,
            opts.batched,
            fixed_point=opts.fixed_point,
            locality=opts.locality,
            background=opts.background,
            source_text=source_text,
            reader=self.reader,
        )
        blend = Blend(cf.latent_masks, cf.trajectory) if cf.latent_masks is not None else None
        edited = cf.edited.copy()

        # 6. Cycle, with adaptive strength for the edits that did not close it. The reconstruction goes
        # through the generator in the same batch: what G writes for it is the cycle's own baseline.
        # With the inversion background the edits are compared with the input's VAE round trip (what
        # they equal outside their masks); it is read in the same batch.
        separate = cf.background == "inversion"
        firsts = [cf.reconstruction, cf.reference] if separate else [cf.reconstruction]
        both = read_findings(self.generator, [*firsts, *edited], self.labeler, opts.policy)
        recon_findings, baseline = both.findings[0], both.findings[len(firsts) - 1]
        results: list[CycleResult] = []
        reads = zip(requests, both.reports[len(firsts) :], both.findings[len(firsts) :], strict=True)
        for request, regenerated, after in reads:
            success, collateral = judge(request, after, baseline)
            results.append(CycleResult(success, collateral, regenerated, after))
        used = [strengths[0]] * len(requests)
        attempts: list[list[dict[str, Any]]] = [
            [{"strength": strengths[0], "success": r.success}] for r in results
        ]
        retry_masks = blend.masks if blend is not None else None
        if retry_masks is not None and opts.retry_masks != "same":
            retry_masks = SMALLER_MASKS[opts.retry_masks](cf.latent_masks, cf.responses)
        for strength in strengths[1:]:
            todo = [i for i, r in enumerate(results) if not r.success]
            if not todo:
                break
            rows = self._resample(cf, requests, todo, strength, retry_masks)
            # Judged against the same baseline as the first attempt (a retry is the same edit, stronger).
            retried = close_cycle(
                self.generator, [requests[i] for i in todo], rows, self.labeler, opts.policy, baseline
            )
            for i, row, result in zip(todo, rows, retried, strict=True):
                attempts[i].append({"strength": strength, "success": result.success})
                # Keep the strongest tried while none closes; the first that closes is the weakest that does.
                results[i], edited[i], used[i] = result, row, strength

        # 6b. Spare the other findings (smaller masks for edits that closed with collateral).
        if cf.latent_masks is not None and opts.spare:
            self._spare(cf, requests, results, edited, used, attempts, baseline)

        # The lever each kept counterfactual was sampled with (the late variant's, where it spared).
        lever_of = [
            "late"
            if any(a.get("variant") == "late" and a["success"] and a["preserved"] for a in tried)
            else opts.lever
            for tried in attempts
        ]

        # 7. Frames on |reconstruction - counterfactual|, mapped back to the original's pixels.
        edits = []
        for i, request in enumerate(requests):
            difference = np.abs(cf.reference - edited[i]).astype(np.float32)
            found = extract_frames(
                difference, self.frame_thresholds(request.finding), opts.top_k, rank=opts.rank
            )
            result = results[i]
            edits.append(
                Edit(
                    finding=request.finding,
                    kind=request.kind,
                    prompt=request.prompt,
                    success=result.success,
                    collateral=result.collateral,
                    strength=used[i],
                    lever=lever_of[i],
                    attempts=attempts[i],
                    regenerated_report=result.regenerated_report,
                    findings_after=result.findings_after,
                    frames=scale_frames(found.frames, difference.shape, image.shape),
                    threshold=found.threshold,
                    baseline_holds=(request.finding in baseline) == (request.kind == "remove"),
                    counterfactual=edited[i],
                    difference=difference,
                )
            )

        # 8. Package, with the trust signal.
        recon_psnr = psnr(cf.image, cf.reconstruction)
        noise_std = float(cf.inversion.noise.std())
        trusted, notes = self._trust(recon_psnr, noise_std, findings, recon_findings)
        settings = {
            **opts.to_dict(),
            "labeler": getattr(self.labeler, "name", type(self.labeler).__name__),
            "model_image_size": self.components.image_size,
            "frame_thresholds": self.frame_thresholds.to_dict(),
        }
        return Explanation(
            image=name or "<array>",
            generator=self.generator.name,
            model=self.model_name,
            report=report,
            findings=findings,
            reconstruction_findings=recon_findings,
            baseline_findings=baseline,
            prompt=source_text if source_text is not None else build_prompt(findings),
            reconstruction_psnr=round(recon_psnr, 3),
            trusted=trusted,
            notes=notes,
            original_size=list(image.shape),
            edits=edits,
            settings=settings,
            seconds=round(time.perf_counter() - started, 3),
            versions=versions(),
            input=cf.image,
            reconstruction=cf.reconstruction,
            reference=cf.reference if separate else None,
        )

    def _resample(
        self,
        cf: Counterfactuals,
        requests: list[EditRequest],
        rows: list[int],
        strength: float,
        masks: torch.Tensor | None,
        lever: str | None = None,
        hold: float = 0.0,
        pins: Sequence[dict[str, list[str]]] | None = None,
    ) -> np.ndarray:
        """Sample the edits ``rows`` again from the image's z_T at ``strength`` (one batch).

        Args:
            cf: The image's first counterfactuals (z_T, the reconstruction's trajectory).
            requests: All edits of the image.
            rows: Which of them.
            strength: Edit strength.
            masks: ``[k, 1, h, w]`` edit masks of all k edits (None: unmasked).
            lever: The strength lever (None: the options').
            hold: Extra steering by G's reading (:func:`cvlm.counterfactual.sample_rows`).
            pins: Per row, the collateral of an earlier attempt, pinned back in that steering
                (:meth:`cvlm.counterfactual.GeneratorGuidance.pin`).

        Returns:
            ``(len(rows), H, W)`` counterfactuals.
        """
        opts = self.options
        guide = cf.guide.select(rows) if cf.guide is not None else None
        if guide is not None and pins is not None:
            guide = guide.pin(pins)
        return sample_rows(
            self.components,
            cf.inversion.noise.expand(len(rows), -1, -1, -1),
            [requests[i].prompt for i in rows],
            [requests[i].source_prompt for i in rows],
            opts.steps,
            strength,
            lever or opts.lever,
            batch_size=len(rows) if opts.batched else 1,
            blend=Blend(masks[rows], cf.trajectory) if masks is not None else None,
            guide=guide,
            hold=hold,
        )

    def _spare(
        self,
        cf: Counterfactuals,
        requests: list[EditRequest],
        results: list[CycleResult],
        edited: np.ndarray,
        used: list[float],
        attempts: list[list[dict[str, Any]]],
        baseline: list[str],
    ) -> None:
        """Retry each edit that closed its cycle with collateral; updates the lists in place.

        The variants of :attr:`ExplainOptions.spare` are tried in order: the smaller masks at the strength
        the edit closed at, ``weaker`` on the edit's own mask at :func:`~cvlm.counterfactual.weaker_strength`;
        the first variant edit that closes the cycle without collateral replaces the edit, otherwise the
        edit stays as it was. (Pushing a variant that spared the others but no longer closed the cycle to
        the schedule's stronger strengths closed none of 4 such edits on the development world: not done.)
        """
        opts = self.options
        for variant in opts.spare:
            lever, hold = None, 0.0
            if variant == "hold":
                # The same edit, steered to keep what G reads of the other findings.
                masks, strength_of, hold = cf.latent_masks, list(used), HOLD_STRENGTH
                changed = [True] * len(used)
            elif variant == "late":
                # The same strength guided on the nearly clean steps only: less change far from the sign.
                # It differs from the edit only where that was guided at every step.
                masks, strength_of, lever = cf.latent_masks, list(used), "late"
                changed = [opts.lever == "guidance" and s > 1.0 for s in used]
            elif variant in ("weaker", "stronger"):
                masks = cf.latent_masks
                if variant == "weaker":
                    strength_of = [weaker_strength(s, opts.strengths) for s in used]
                else:
                    # The schedule's next strength, tried even with adaptive strength off: asked for.
                    strength_of = [stronger_strength(s, opts.schedule) for s in used]
                changed = [s is not None for s in strength_of]
            else:
                masks = SMALLER_MASKS[variant](cf.latent_masks, cf.responses)
                strength_of = list(used)
                changed = [not torch.equal(m, full) for m, full in zip(masks, cf.latent_masks, strict=True)]
            todo = [i for i, r in enumerate(results) if r.success and not r.preserved and changed[i]]
            if not todo:
                continue
            rows = np.zeros((len(todo), *edited.shape[1:]), np.float32)
            for strength in sorted({strength_of[i] for i in todo}):  # one batch per strength
                group = [n for n, i in enumerate(todo) if strength_of[i] == strength]
                picked = [todo[n] for n in group]
                # The hold retry pins the findings the edit changed back where the reference has them.
                pins = [results[i].collateral for i in picked] if variant == "hold" else None
                rows[group] = self._resample(cf, requests, picked, strength, masks, lever, hold, pins)
            retried = close_cycle(
                self.generator, [requests[i] for i in todo], rows, self.labeler, opts.policy, baseline
            )
            for i, row, result in zip(todo, rows, retried, strict=True):
                attempts[i].append(
                    {
                        "strength": strength_of[i],
                        "variant": variant,
                        "success": result.success,
                        "preserved": result.preserved,
                    }
                )
                if result.success and result.preserved:
                    results[i], edited[i], used[i] = result, row, strength_of[i]

    def _trust(
        self, recon_psnr: float, noise_std: float, findings: list[str], recon_findings: list[str]
    ) -> tuple[bool, list[str]]:
        notes = []
        trusted = True
        margin = self.options.trust_margin_db
        calibration = self.trust if self.trust and self.trust.get("steps") == self.options.steps else None
        if calibration is not None:
            spread = calibration["noise_std"]
            z = (noise_std - spread["mean"]) / max(spread["sd"], 1e-6)
            if abs(z) > NOISE_Z_LIMIT:
                trusted = False
                notes.append(
                    f"Untrusted: the inverted noise has a spread of {noise_std:.3f}, {abs(z):.0f} SDs from "
                    "what "
                    f"this model gives on images it knows ({spread['mean']:.3f} +/- {spread['sd']:.3f}, "
                    f"n={calibration['n']}); the input lies outside what the models know."
                )
            reference = calibration["psnr"]["min"]
        else:
            reference = _validated_psnr(self.components) if self.options.steps >= 50 else None
            notes.append(
                "No trust calibration for this model at this T (trust.json); only the reconstruction PSNR "
                "was checked."
                if reference is not None
                else "No trust calibration for this model at this T; trust could not be checked."
            )
        if reference is not None and recon_psnr < reference - margin:
            trusted = False
            notes.append(
                f"Untrusted: the reconstruction PSNR {recon_psnr:.1f} dB is more than {margin:g} dB below "
                f"what the model reaches on images it knows ({reference:.1f} dB); its counterfactuals mean "
                "little."
            )
        if recon_findings != findings:
            notes.append(
                f"The generator reads the reconstruction as {recon_findings or 'normal'} where it read the "
                f"input as {findings or 'normal'}: edits of findings it lost are flagged (baseline_holds)."
            )
        return trusted, notes


@contextlib.contextmanager
def _without_onednn() -> Iterator[None]:
    """Turn torch's oneDNN CPU kernels off, and back to what they were on exit.

    (``torch.backends.mkldnn.flags`` would do it too, but warns about Intel GPUs on every call.)
    """
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def explain(
    image: np.ndarray | str | Path,
    generator: str | ReportGenerator,
    model: str | Path,
    labeler: Labeler | None = None,
    device: str | None = None,
    **options: Any,
) -> Explanation:
    """Explain one X-ray: ``explain("study.dcm", "phantom-captioner", "phantom-captioner")``.

    Args:
        image: An xray-convention array or an image file.
        generator: Bundled name, folder, adapter spec or a loaded generator.
        model: The generator's tailored diffusion model (bundled name or folder).
        labeler: Default: the rule-based labeler.
        device: Torch device (default CPU for the model; the generator's own default).
        **options: Fields of :class:`ExplainOptions` (``steps``, ``remove``, ``add``, ``lever``, ...).

    Returns:
        An :class:`Explanation`; ``.save(folder)`` writes it.
    """
    return Explainer.load(generator, model, labeler, ExplainOptions(**options), device)(image)


# ------------------------------------------------------------------------------ many files
@dataclass
class ExplainSummary:
    """What :func:`explain_files` did in this process.

    Attributes:
        out: The output folder.
        explained: Inputs explained now.
        skipped: Inputs already in the index from an earlier run.
        failed: ``(input, reason)`` of inputs that could not be explained now.
    """

    out: Path
    explained: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def folder_name(path: Path, root: Path | None) -> str:
    """The output folder of one input: its path below the input root, ``/`` -> ``__``, suffix kept.

    Example:
        >>> folder_name(Path("w/files/p10/s5/ab.jpg"), Path("w/files"))
        'p10__s5__ab_jpg'
    """
    rel = path.relative_to(root) if root is not None and path.is_relative_to(root) else Path(path.name)
    parts = [*rel.parts[:-1], rel.stem + rel.suffix.replace(".", "_")]
    return "__".join(p.replace(" ", "_") for p in parts)


def _read_index(path: Path) -> dict[str, dict]:
    """Lines of an index by input path; a torn last line (a run killed mid-write) is ignored."""
    done: dict[str, dict] = {}
    if path.is_file():
        for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(raw)
                done[row["input"]] = row
            except (json.JSONDecodeError, RecursionError, KeyError, TypeError):
                continue
    return done


def _append(path: Path, row: dict) -> None:
    # One write() on an O_APPEND descriptor: lines from several processes never interleave.
    append_lines(path, [json.dumps(row)])


def index_row(explanation: Explanation, source: str, folder: str) -> dict[str, Any]:
    """The index line of a finished explanation."""
    return {
        "input": source,
        "folder": folder,
        "status": "ok",
        "trusted": explanation.trusted,
        "report": explanation.report,
        "findings": explanation.findings,
        "reconstruction_psnr": explanation.reconstruction_psnr,
        "edits": [
            {
                "finding": e.finding,
                "kind": e.kind,
                "success": e.success,
                "preserved": e.preserved,
                "strength": e.strength,
            }
            for e in explanation.edits
        ],
        "seconds": explanation.seconds,
    }


def _shard(items: list[Path]) -> tuple[list[Path], int]:
    """This process's share of the inputs under ``accelerate launch`` (all of them otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return items, 0
    from accelerate import PartialState

    state = PartialState()
    return items[state.process_index :: state.num_processes], state.process_index


def explain_files(
    inputs: Sequence[str | Path],
    explainer: Explainer,
    out: str | Path,
    progress: bool = True,
) -> ExplainSummary:
    """``cvlm explain`` over files and folders (folders searched recursively, MIMIC ``files/`` works).

    Each input gets ``out/<folder_name>/`` (written to a temporary folder and renamed: no half-written
    folder survives a kill) and one line in ``out/index.jsonl``; inputs with a line are skipped, so a
    rerun adds nothing. An unreadable input gets a line with ``"status": "error"`` and the rest go on.

    Raises:
        FileNotFoundError: If an input does not exist.
        ValueError: If no input image is found.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = collect_images(inputs)
    if not paths:
        raise ValueError(f"No X-ray files found in {', '.join(map(str, inputs))}.")
    roots = {Path(i): Path(i) for i in inputs if Path(i).is_dir()}
    owner = {p: next((r for r in roots if p.is_relative_to(r)), None) for p in paths}
    index = out / INDEX
    done = _read_index(index)
    mine, rank = _shard(paths)
    summary = ExplainSummary(out)
    scratch = out / ".partial"
    scratch.mkdir(exist_ok=True)
    _clean_scratch(scratch)
    with tqdm(total=len(mine), desc="explain", unit="img", disable=not progress or rank != 0) as bar:
        for path in mine:
            source = str(path)
            name = folder_name(path, owner[path])
            final = out / name
            if source in done:
                summary.skipped += 1
            elif (final / EXPLANATION_FILE).is_file():
                # Finished before a kill, but not indexed yet: index it, do not redo it.
                _append(index, index_row(Explanation.load(final, arrays=False), source, name))
                summary.skipped += 1
            else:
                try:
                    explanation = explainer(path)
                except (XrayReadError, ValueError, OSError) as err:
                    reason = str(err)
                    summary.failed.append((source, reason))
                    _append(index, {"input": source, "folder": None, "status": "error", "error": reason})
                else:
                    tmp = scratch / f"{name}.{os.getpid()}"
                    shutil.rmtree(tmp, ignore_errors=True)
                    try:
                        explanation.save(tmp)
                    except OSError as err:
                        # A full disk: the half-written folder goes, the finished ones stay indexed.
                        shutil.rmtree(tmp, ignore_errors=True)
                        raise OutputWriteError(err.errno, explain_os_error(err, final), str(final)) from err
                    os.replace(tmp, final)
                    _append(index, index_row(explanation, source, name))
                    summary.explained += 1
            bar.update(1)
    return summary


def _clean_scratch(scratch: Path) -> None:
    """Remove temporary folders of runs that were killed (their process is gone)."""
    for tmp in scratch.glob("*.*"):
        pid = tmp.suffix.lstrip(".")
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = [
    "INDEX",
    "ExplainOptions",
    "ExplainSummary",
    "Explainer",
    "explain",
    "explain_files",
    "folder_name",
]
