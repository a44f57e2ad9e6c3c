"""Counterfactual X-rays: invert once, then sample every edit of an image in one batch (CVLM steps 4-5).

For an X-ray x whose report names the findings F (prompt P = prompt(F)):

1. encode z_0 = VAE(x) and DDIM-invert it with P at guidance 1 to z_T, **once**;
2. for every requested edit e (remove a finding: P_e = prompt(F - {f}), the paper's; add one:
   prompt(F + {f}), beyond it) sample from the same z_T with P_e; all edits of the image, plus the
   reconstruction with P itself, go through the UNet as **one batch**, so the cost of k edits is one
   inversion plus T batched calls rather than k inversions and k T calls;
3. decode.

**Edit strength.** At guidance 1 (the paper's setting) a tailored model trained with few steps edits
thin, faint signs (a rib break, pleural thickening) only weakly, and the generator still writes them.
Four sampling-time levers strengthen an edit, all equal to the plain edit at strength 1:

* ``guidance`` (default): classifier-free guidance with the *source* prompt as the negative direction,
  eps = eps(P) + w (eps(P_e) - eps(P)) (as in Ho & Salimans 2022, with P in place of the empty prompt):
  w > 1 pushes further away from what the image is, towards what it should become. Two UNet calls per
  row and step.
* ``late``: the same guidance only at the nearly clean end of sampling (timesteps below
  :data:`LATE_GUIDANCE_BELOW`), the plain edit before it. Thin, faint signs (a rib break, a pleural line)
  are decided there: at high noise the finding's word says only that a sign exists somewhere, not where,
  and guiding those steps moves large structures (the change outside the finding's mask). One UNet call
  per row on the early steps, two on the late ones.
* ``embedding``: extrapolation in text-embedding space, tau = tau(P) + s (tau(P_e) - tau(P)): the
  finding's words weigh s times as much in every cross-attention. One UNet call per row and step.
* ``generator`` (beyond the paper): the plain edit, steered on the steps at t < 500 by G's own reading
  of each step's clean estimate (:class:`GeneratorGuidance`): the edited finding towards gone (or
  present), every other finding held where G reads it on the reconstruction. Needs G's finding logits.

:mod:`cvlm.explain` escalates the strength through a schedule only for edits whose cycle did not close,
and keeps the weakest that closes it (adaptive strength). Which lever is the default was measured
(docs/explain.md); at strength 1 all reduce to the paper's edit. The steering of the ``generator`` lever
also serves the ``hold`` retry (:data:`SPARE_VARIANTS`) of an edit that changed another finding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from cvlm.diffusion.components import DiffusionComponents
from cvlm.diffusion.inversion import NoiseAdjust, ddim_invert, unet_predictor
from cvlm.diffusion.reconstruction import Inversion, decode_latents, embed, encode_images, invert, sample
from cvlm.findings import DEFAULT_VOCABULARY, NO_FINDING, FindingVocabulary
from cvlm.frames import extract_frames
from cvlm.prompts import add_finding, build_prompt, remove_finding
from cvlm.xray import from_tensor, resize, to_tensor

LEVERS = ("guidance", "late", "embedding", "generator")
LOCALITIES = ("none", "mask")
BACKGROUNDS = ("inversion", "reconstruction")
DEFAULT_BACKGROUND = "reconstruction"
DEFAULT_LEVER = "guidance"
LATE_GUIDANCE_BELOW = 300
"""The ``late`` lever guides the DDIM steps at timesteps below this (of 1,000; 15 of T = 50 steps), where the
noise in z_t is below about 0.8 of the signal (sqrt((1 - alpha_bar) / alpha_bar), scaled-linear betas)."""
DEFAULT_SCHEDULE: dict[str, tuple[float, ...]] = {
    "guidance": (1.0, 2.0, 3.5, 5.0),
    "late": (1.0, 3.0, 5.0, 8.0),
    "embedding": (1.0, 2.0, 3.0, 4.0),
    "generator": (1.0, 2.0, 4.0, 8.0),
}
"""Strengths tried in order by adaptive strength; the first is the paper's plain edit."""


@dataclass(frozen=True)
class EditRequest:
    """One edit of one image: which finding, which way, and the prompts before and after.

    Attributes:
        finding: Canonical finding name.
        kind: ``"remove"`` or ``"add"``.
        source: The findings the generator wrote (the image's own prompt).
        target: The findings after the edit.
        source_text: For a model trained on report text (``cvlm prepare --prompts raw``): the report
            itself is P (None: the structured prompt of ``source``).
        text: With ``source_text``: the edited report P_e (:func:`cvlm.readout.edit_report`).
    """

    finding: str
    kind: str
    source: tuple[str, ...]
    target: tuple[str, ...]
    source_text: str | None = None
    text: str | None = None

    @property
    def prompt(self) -> str:
        """The edited prompt P_e."""
        return self.text if self.text is not None else build_prompt(self.target)

    @property
    def source_prompt(self) -> str:
        """The image's own prompt P."""
        return self.source_text if self.source_text is not None else build_prompt(self.source)


def check_finding_names(
    names: Iterable[str], vocabulary: FindingVocabulary = DEFAULT_VOCABULARY
) -> list[str]:
    """Canonical names of user-given findings.

    Raises:
        ValueError: For an unknown name or No Finding; the message lists the valid names.
    """
    out = []
    for name in names:
        try:
            canonical = vocabulary.normalize(name)
        except ValueError:
            canonical = None
        if canonical is None or canonical == NO_FINDING:
            valid = ", ".join(n for n in vocabulary.names if n != NO_FINDING)
            raise ValueError(f"Unknown finding {name!r}; valid names (any case): {valid}.")
        out.append(canonical)
    return out


def plan_edits(
    findings: Sequence[str],
    remove: str | Sequence[str] | None = "all",
    add: Sequence[str] = (),
    vocabulary: FindingVocabulary = DEFAULT_VOCABULARY,
) -> list[EditRequest]:
    """The edits of one image: removals of written findings, additions of unwritten ones.

    Args:
        findings: The findings the generator wrote for the image.
        remove: ``"all"`` (every written finding: the paper), a list (those of them the generator
            wrote; the others cannot be removed and are skipped), or None / empty for no removal.
        add: Findings to add (those the generator already wrote are skipped).
        vocabulary: Finding names and order.

    Returns:
        Removals in canonical order, then additions in canonical order.

    Raises:
        ValueError: For an unknown finding name (listing the valid ones).
    """
    source = tuple(vocabulary.sort(findings))
    if remove == "all":
        to_remove = list(source)
    else:
        to_remove = [f for f in vocabulary.sort(check_finding_names(remove or (), vocabulary)) if f in source]
    to_add = [f for f in vocabulary.sort(check_finding_names(add, vocabulary)) if f not in source]
    edits = [
        EditRequest(f, "remove", source, tuple(remove_finding(source, f, vocabulary))) for f in to_remove
    ]
    edits += [EditRequest(f, "add", source, tuple(add_finding(source, f, vocabulary))) for f in to_add]
    return edits


@torch.no_grad()
def sample_rows(
    components: DiffusionComponents,
    noise: torch.Tensor,
    prompts: Sequence[str],
    source_prompts: Sequence[str] | None = None,
    steps: int = 50,
    strength: float = 1.0,
    lever: str = DEFAULT_LEVER,
    batch_size: int = 16,
    blend: Blend | BlendWithFirstRow | None = None,
    record: list[torch.Tensor] | None = None,
    guide: GeneratorGuidance | None = None,
    hold: float = 0.0,
) -> np.ndarray:
    """Sample one image per row of z_T with its own prompt, ``batch_size`` rows per UNet batch.

    Args:
        components: The tailored model.
        noise: z_T ``[N, c, h, w]`` (rows of an :class:`Inversion`'s noise, repeated per edit).
        prompts: N prompts (edited prompts, or the source prompt for a reconstruction row).
        source_prompts: N source prompts, the direction the strength levers push away from; ``None``
            with the ``guidance`` lever means the empty prompt (classic classifier-free guidance).
        steps: DDIM steps T (the inversion's).
        strength: 1 = the plain edit; see the module docstring.
        lever: ``"guidance"``, ``"late"`` or ``"generator"`` (below strength 1 both as ``"guidance"``, a
            weaker edit at every step) or ``"embedding"``.
        batch_size: Rows per UNet batch.
        blend: Keep each row's latents equal to the reconstruction's trajectory outside its edit mask
            (see :class:`Blend`); None: edit everywhere.
        record: A list that receives the latents after every step (of a single-row call): the
            reconstruction's trajectory for :class:`Blend`.
        guide: The rows' :class:`GeneratorGuidance` (the ``generator`` lever above strength 1, ``hold``).
        hold: Also steer by G's reading, ``hold`` generator-lever strength more than the edit's own (the
            ``hold`` spare variant); 0: only the generator lever steers.

    Returns:
        ``(N, H, W)`` float32 in [0, 1].

    Raises:
        ValueError: For an unknown lever, a strength below 1 with the embedding lever, the generator
            lever above strength 1 without a guide, or mismatched lengths.
    """
    if lever not in LEVERS:
        raise ValueError(f"Unknown strength lever {lever!r}; choose one of {', '.join(LEVERS)}.")
    if len(prompts) != noise.shape[0] or (source_prompts is not None and len(source_prompts) != len(prompts)):
        raise ValueError(
            f"Need one prompt (and source prompt) per row: {noise.shape[0]} rows, {len(prompts)} prompts."
        )
    if lever == "embedding" and source_prompts is None and strength != 1.0:
        raise ValueError("The embedding lever needs the source prompts.")
    steered = lever == "generator" and strength > 1.0
    steer = (strength if steered else 1.0) + hold
    if steer > 1.0 and (guide is None or len(guide.columns) != noise.shape[0]):
        raise ValueError("Steering by G's reading needs one GeneratorGuidance row per row of z_T.")
    out = []
    for start in range(0, noise.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        chunk, chunk_prompts = noise[rows], list(prompts[rows])
        chunk_sources = list(source_prompts[rows]) if source_prompts is not None else None
        adjust = guide.adjust(rows, steer) if guide is not None and steer > 1.0 else None
        callback = None
        if blend is not None:
            callback = blend.callback(rows)
        elif record is not None:
            callback = _recorder(record)
        if lever == "embedding" and strength != 1.0:
            source, edited = embed(components, chunk_sources), embed(components, chunk_prompts)
            text = source + strength * (edited - source)
            images = sample(
                components, chunk, chunk_prompts, steps, text=text, callback=callback, adjust=adjust
            )
        elif steered:
            images = sample(components, chunk, chunk_prompts, steps, callback=callback, adjust=adjust)
        else:
            late = lever == "late" and strength > 1.0
            images = sample(
                components,
                chunk,
                chunk_prompts,
                steps,
                strength,
                chunk_sources,
                callback=callback,
                guidance_below=LATE_GUIDANCE_BELOW if late else None,
                adjust=adjust,
            )
        out.append(from_tensor(images.cpu()).reshape(len(chunk_prompts), *images.shape[-2:]))
    return np.concatenate(out).astype(np.float32)


GENERATOR_STEP = 0.05
"""RMS (in scaled latent units) by which the ``generator`` lever moves a step's clean estimate per unit of
strength above 1."""
GENERATOR_GUIDANCE_BELOW = 500
"""The ``generator`` lever steers the DDIM steps at timesteps below this (of 1,000; 25 of T = 50 steps)."""

Reader = Callable[[torch.Tensor], torch.Tensor]
"""Images ``(B, 1, H, W)`` in [-1, 1] -> finding logits ``(B, F)``, differentiable in the images
(:func:`cvlm.generators.features.reader`)."""


@dataclass
class GeneratorGuidance:
    """The ``generator`` lever: steer each edit with the generator's own reading (beyond the paper).

    On every DDIM step below :data:`GENERATOR_GUIDANCE_BELOW` the step's clean estimate
    x0 = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t) is decoded and read by G; x0 moves down the gradient of
    the Bernoulli KL divergence between what G should read after the edit (its reading of the cycle's
    reference, the reconstruction, or of the input before there is one, with the edited finding's
    probability set to 0 for a removal, 1 for an addition) and what it reads,
    by ``(strength - 1) * step`` in RMS, and eps is recomputed from the moved x0 (as in universal
    guidance, Bansal et al., 2023; DiME, Jeanneret et al., ACCV 2022, steer with a classifier the same
    way). The text condition still does the editing; the guidance pushes the finding's sign where G
    reads it and holds the other findings where G reads them. It needs G's finding logits (the bundled
    phantom generators and folders trained by cvlm have them).

    Attributes:
        components: The tailored model (its VAE decodes the clean estimates; its schedule gives a_t).
        reader: G's finding logits.
        columns: ``[N]`` long, each row's edited finding's column of the reader (-1: not steered, e.g. a
            reconstruction row).
        targets: ``[N]`` float, 0 for a removal, 1 for an addition.
        source: ``[1 or N, F]`` G's logits on the reference image(s) (what the other findings must stay at).
        step: RMS latent step per unit of strength above 1 (:data:`GENERATOR_STEP`).
        below: Steer the steps at timesteps below this.
        findings: The names of the reader's columns.
        pinned: ``[N, F]`` per row and finding: a probability G must read (0 or 1), NaN for none; a
            pinned finding outweighs the others :data:`PIN_WEIGHT` to 1 (:meth:`pin`). None: none.
    """

    components: DiffusionComponents
    reader: Reader
    columns: torch.Tensor
    targets: torch.Tensor
    source: torch.Tensor
    step: float = GENERATOR_STEP
    below: float = GENERATOR_GUIDANCE_BELOW
    findings: tuple[str, ...] = ()
    pinned: torch.Tensor | None = None

    @classmethod
    def for_requests(
        cls,
        components: DiffusionComponents,
        reader: Reader,
        findings: Sequence[str],
        image: np.ndarray,
        requests: Sequence[EditRequest | None],
        **kwargs: float,
    ) -> GeneratorGuidance:
        """The guidance of one image's rows.

        Args:
            components: The tailored model.
            reader: G's finding logits.
            findings: The names of the reader's columns.
            image: ``(H, W)`` in [0, 1] at the model's size: what G must keep reading of the other
                findings (the input, before there is a reconstruction).
            requests: One per row; None for a row that is not steered (the reconstruction).
            **kwargs: ``step``, ``below``.

        Raises:
            ValueError: If G has no column for an edited finding.
        """
        unknown = sorted({r.finding for r in requests if r is not None} - set(findings))
        if unknown:
            raise ValueError(
                f"The generator lever needs G's reading of {', '.join(unknown)}, which it does not read "
                f"(it reads {', '.join(findings)})."
            )
        columns = torch.tensor(
            [-1 if r is None else list(findings).index(r.finding) for r in requests], dtype=torch.long
        )
        targets = torch.tensor([float(r is not None and r.kind == "add") for r in requests])
        device = next(components.unet.parameters()).device
        source = _reading(components, reader, image)
        return cls(
            components,
            reader,
            columns.to(device),
            targets.to(device),
            source,
            findings=tuple(findings),
            **kwargs,
        )

    def reading(self, image: np.ndarray) -> GeneratorGuidance:
        """The same rows, holding the other findings at G's reading of ``image`` (H, W) in [0, 1]."""
        return replace(self, source=_reading(self.components, self.reader, image))

    def select(self, rows: Sequence[int | None]) -> GeneratorGuidance:
        """The guidance of a new batch whose row i is this one's row ``rows[i]`` (None: not steered)."""
        picked = torch.tensor([-1 if r is None else r for r in rows], device=self.columns.device)
        keep = picked >= 0
        columns = torch.where(keep, self.columns[picked.clamp_min(0)], torch.full_like(picked, -1))
        source = self.source if self.source.shape[0] == 1 else self.source[picked.clamp_min(0)]
        return replace(self, columns=columns, targets=self.targets[picked.clamp_min(0)], source=source)

    def pin(self, collateral: Sequence[dict[str, Sequence[str]]]) -> GeneratorGuidance:
        """Pin, per row, the findings an earlier attempt changed back to where the reference has them.

        Args:
            collateral: One ``{"lost": [...], "gained": [...]}`` per row (:class:`cvlm.cyclic.CycleResult`):
                a lost finding must be read (1), a gained one not (0).
        """
        pinned = torch.full((len(self.columns), len(self.findings)), float("nan"), device=self.columns.device)
        for row, changed in enumerate(collateral):
            for value, key in ((1.0, "lost"), (0.0, "gained")):
                for name in changed.get(key, ()):
                    if name in self.findings:
                        pinned[row, self.findings.index(name)] = value
        return replace(self, pinned=pinned)

    def adjust(self, rows: slice, strength: float) -> NoiseAdjust | None:
        """The :data:`~cvlm.diffusion.inversion.NoiseAdjust` of the rows ``rows`` at ``strength``."""
        scale = (strength - 1.0) * self.step
        columns, targets = self.columns[rows], self.targets[rows]
        source = self.source if self.source.shape[0] == 1 else self.source[rows]
        pinned = self.pinned[rows] if self.pinned is not None else None
        steered = columns >= 0
        if scale <= 0 or not bool(steered.any()):
            return None
        alphas = self.components.scheduler.alphas_cumprod
        vae = self.components.vae
        # What G should read, [N, F]: the reference's reading, the edited finding set, the pins applied.
        target = torch.sigmoid(source).expand(len(columns), -1).clone()
        index = torch.arange(len(columns), device=columns.device)[steered]
        target[index, columns[steered]] = targets[steered]
        weight = torch.ones_like(target)
        if pinned is not None:
            known = ~torch.isnan(pinned)
            target = torch.where(known, pinned, target)
            weight = torch.where(known, torch.full_like(weight, PIN_WEIGHT), weight)

        def steer(t: torch.Tensor, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
            if float(t) >= self.below:
                return eps
            a = alphas[int(t)].to(z.device, torch.float32)
            with torch.enable_grad():
                x0 = ((z - (1 - a).sqrt() * eps) / a.sqrt()).detach().requires_grad_(True)
                images = vae.decode(x0 / vae.config.scaling_factor).sample.float().mean(dim=1, keepdim=True)
                seen = self.reader(images)
                kl = (weight * F.binary_cross_entropy_with_logits(seen, target, reduction="none")).sum(dim=1)
                (grad,) = torch.autograd.grad((kl * steered).sum(), x0)
            # A fixed RMS step per row: the gradient's size says little (a saturated logit has none).
            rms = grad.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
            moved = x0.detach() - scale * steered.view(-1, 1, 1, 1) * grad / rms
            return (z - a.sqrt() * moved) / (1 - a).sqrt()

        return steer


@torch.no_grad()
def _reading(components: DiffusionComponents, reader: Reader, image: np.ndarray) -> torch.Tensor:
    """G's logits ``[1, F]`` of one image ``(H, W)`` in [0, 1]."""
    device = next(components.unet.parameters()).device
    pixels = torch.from_numpy(np.asarray(image, np.float32))[None, None].to(device) * 2.0 - 1.0
    return reader(pixels).float()


def _recorder(trajectory: list[torch.Tensor]):
    def record(i: int, t: torch.Tensor, z: torch.Tensor) -> None:
        trajectory.append(z.detach().clone())

    return record


@dataclass
class Blend:
    """Edit only inside a mask (latent blending).

    After every DDIM step, outside the mask the edited latents are replaced by a background trajectory's
    latents of the same noise level: the inversion's own latents (DiffEdit, Couairon et al., ICLR 2023:
    outside the mask the last step returns the input's latents z_0 exactly) or the reconstruction's
    (Blended Latent Diffusion, Avrahami et al., 2023).

    Attributes:
        masks: ``[N, 1, h, w]`` in [0, 1] at the latent resolution, one per row (1 = may change).
        trajectory: The background's latents ``[1, c, h, w]`` after each of the T sampling steps
            (``trajectory[i]`` is at the noise level sampling step ``i`` ends at).
    """

    masks: torch.Tensor
    trajectory: list[torch.Tensor]

    def callback(self, rows: slice):
        """The step callback for the rows ``rows`` of a :func:`sample_rows` call."""
        masks = self.masks[rows]

        def blend(i: int, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return masks * z + (1 - masks) * self.trajectory[i]

        return blend


@torch.no_grad()
def invert_with_masks(
    components: DiffusionComponents,
    image: np.ndarray,
    requests: Sequence[EditRequest],
    steps: int = 50,
    fixed_point: int = 0,
    every: int = 5,
    dilate: int = 2,
    record: list[torch.Tensor] | None = None,
) -> tuple[Inversion, torch.Tensor, np.ndarray, torch.Tensor]:
    """Invert one image and estimate, per edit, where the model's prediction answers the edited words.

    While inverting with the source prompt P, every ``every``-th step also predicts the noise for each
    edited prompt P_e at the *same* latents; the mean |eps(z_t, P_e) - eps(z_t, P)| over channels and
    those steps is the edit's response map (DiffEdit's mask estimate, from the inversion's own latents,
    so no trajectory drift enters it; on those steps the inversion's own call is widened to the k + 1
    prompts, so the maps cost T / ``every`` calls of k more rows and no extra call). Its Otsu region
    (:func:`cvlm.frames.extract_frames` with ``"auto"``), dilated by ``dilate`` pixels, is the mask.

    Args:
        components: The tailored model (eval mode).
        image: ``(H, W)`` float32 in [0, 1], any size.
        requests: The edits of this image (one shared source prompt).
        steps: DDIM steps T.
        fixed_point: Fixed-point iterations per inversion step.
        every: Look at the prompt response every this many steps.
        dilate: Pixels the Otsu region is grown by.
        record: A list that receives the inversion's latents at the start of every step: z_0 (the
            input's own latents), z_1, ..., z_{T-1} (the background of :class:`Blend` with
            ``background="inversion"``).

    Returns:
        ``(inversion, latent masks [k, 1, h, w] in {0, 1}, pixel masks (k, H, W) bool, response maps
        [k, h, w])``.
    """
    prompts = [requests[0].source_prompt if requests else build_prompt(()), *(r.prompt for r in requests)]
    text = embed(components, prompts)
    predict = unet_predictor(components.unet)
    response: list[torch.Tensor] = []
    looking = [False]

    def look(i: int, t: torch.Tensor, z: torch.Tensor) -> None:
        if record is not None:
            record.append(z.detach().clone())
        looking[0] = bool(requests) and i % every == every // 2

    def predict_and_look(z: torch.Tensor, t: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        # On a looking step the inversion's own call (the source prompt at z) and the edited prompts at
        # the same z go through the UNet as one batch: the response costs k rows, not k + 1 and a call.
        if not looking[0]:
            return predict(z, t, source)
        looking[0] = False  # a fixed-point iteration of the same step predicts at its end point
        eps = predict(z.expand(len(prompts), -1, -1, -1), t, text)
        response.append((eps[1:] - eps[:1]).abs().mean(dim=1))
        return eps[:1]

    pixels = to_tensor(model_input(components, image)[None], "minus_one_one")
    device = next(components.unet.parameters()).device
    latents = encode_images(components, pixels.to(device))
    noise = ddim_invert(
        predict_and_look,
        components.scheduler.config,
        latents,
        text[:1],
        steps,
        fixed_point=fixed_point,
        callback=look,
    )
    inversion = Inversion(latents, noise, prompts[:1], steps, fixed_point)
    size, (h, w) = components.image_size, inversion.noise.shape[-2:]
    pixel_masks = np.zeros((len(requests), size, size), dtype=bool)
    latent_masks = torch.zeros(len(requests), 1, h, w)
    responses = torch.zeros(len(requests), h, w)
    if requests and response:
        responses = torch.stack(response).mean(0).cpu()
        maps = responses.numpy()
        kernel = np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8)
        for k, latent_map in enumerate(maps):
            found = extract_frames(resize(latent_map, size), "auto")
            region = cv2.dilate(found.mask.astype(np.uint8), kernel) > 0
            pixel_masks[k] = region
            latent = cv2.resize(region.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0
            latent_masks[k, 0] = torch.from_numpy(latent.astype(np.float32))
    return inversion, latent_masks.to(device), pixel_masks, responses


def core_masks(masks: torch.Tensor, responses: torch.Tensor, share: float = 0.5) -> torch.Tensor:
    """Each edit mask cut to its core: the pixels where the response reaches ``share`` of its maximum.

    Args:
        masks: ``[k, 1, h, w]`` edit masks in {0, 1} (:func:`invert_with_masks`).
        responses: ``[k, h, w]`` the response maps they were thresholded from.
        share: Fraction of each map's maximum inside its mask that a pixel must reach.

    Returns:
        ``[k, 1, h, w]``, each a subset of its mask (never empty where the mask is not).

    Example:
        >>> m = torch.ones(1, 1, 1, 3)
        >>> core_masks(m, torch.tensor([[[1.0, 0.6, 0.2]]]))[0, 0, 0].tolist()
        [1.0, 1.0, 0.0]
    """
    r = responses.to(masks.device, masks.dtype) * masks[:, 0]
    peak = r.flatten(1).amax(1)[:, None, None]
    return (masks[:, 0] * (r >= share * peak).to(masks.dtype))[:, None]


def keep_others(masks: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """Edit masks that leave the other findings' regions alone (a keep mask, as in RadEdit).

    Where the masks of several edits of one image overlap, a latent pixel stays in edit k's mask only if
    no other edit answers there more strongly, each response map measured against its own maximum (the
    maps of different findings differ in scale). Edits that share no pixels keep their masks.

    Args:
        masks: ``[k, 1, h, w]`` edit masks in {0, 1} (:func:`invert_with_masks`).
        responses: ``[k, h, w]`` the response maps they were thresholded from.

    Returns:
        ``[k, 1, h, w]``, each a subset of its mask.

    Example:
        >>> m = torch.ones(2, 1, 1, 2)
        >>> r = torch.tensor([[[1.0, 0.2]], [[0.1, 1.0]]])
        >>> keep_others(m, r)[:, 0, 0].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    if len(masks) < 2:
        return masks
    r = responses.to(masks.device, masks.dtype)
    scaled = r / r.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    inside = masks[:, 0] > 0
    scaled = torch.where(inside, scaled, torch.zeros_like(scaled))
    # For each k: the strongest scaled response among the *other* edits at every pixel.
    k = len(masks)
    others = torch.stack([torch.cat([scaled[:i], scaled[i + 1 :]]).amax(0) for i in range(k)])
    return (masks[:, 0] * (scaled >= others).to(masks.dtype))[:, None]


def wider_masks(masks: torch.Tensor, responses: torch.Tensor | None = None, pixels: int = 1) -> torch.Tensor:
    """Each edit mask grown by ``pixels`` latent pixels in every direction (a 3x3 dilation per pixel).

    A removal whose seam the generator reads as another finding (a line's residue as a nodule) may
    lose it when the edit blends in further out.

    Example:
        >>> m = torch.zeros(1, 1, 1, 5); m[..., 2] = 1
        >>> wider_masks(m)[0, 0, 0].tolist()
        [0.0, 1.0, 1.0, 1.0, 0.0]
    """
    size = 2 * pixels + 1
    return torch.nn.functional.max_pool2d(masks, size, stride=1, padding=pixels)


SMALLER_MASKS = {"keep": keep_others, "core": core_masks, "wider": wider_masks}
"""The other masks tried, by name, for an edit that changed another finding too (``--spare``)."""
SPARE_VARIANTS = (*SMALLER_MASKS, "weaker", "stronger", "late", "hold")
"""The ``--spare`` variants: the smaller masks, then ``weaker``: the edit's own mask at a strength halfway
down to the schedule's previous strength (from the first strength: half of it, a partial edit); ``stronger``:
the schedule's next strength; ``late``: a guided edit (strength above 1) again at its strength with the
``late`` lever, guided on the nearly clean steps only; ``hold``: the edit again at its strength, steered by
G's reading (:class:`GeneratorGuidance` at strength 1 + :data:`HOLD_STRENGTH`): the other findings held where
G reads them."""
HOLD_STRENGTH = 1.0
"""The ``hold`` spare variant's steering, as generator-lever strength above 1."""
PIN_WEIGHT = 5.0
"""How much more a pinned finding (one an earlier attempt changed) weighs in the steering than the others."""


def weaker_strength(strength: float, schedule: Sequence[float]) -> float:
    """Halfway between ``strength`` and the strongest schedule entry below it (0 if there is none).

    Adaptive strength keeps the weakest *schedule* strength that closes the cycle; an edit that closed with
    collateral may close without it somewhere below, where the schedule has not looked.

    Example:
        >>> weaker_strength(1.0, (1.0, 2.0, 3.5)), weaker_strength(3.5, (1.0, 2.0, 3.5))
        (0.5, 2.75)
    """
    below = [s for s in schedule if s < strength]
    return (max(below, default=0.0) + strength) / 2


def stronger_strength(strength: float, schedule: Sequence[float]) -> float | None:
    """The schedule's next strength above ``strength`` (None at its top).

    Example:
        >>> stronger_strength(1.0, (1.0, 2.0, 3.5)), stronger_strength(3.5, (1.0, 2.0, 3.5))
        (2.0, None)
    """
    above = [s for s in schedule if s > strength]
    return min(above) if above else None


@dataclass
class Counterfactuals:
    """One image, its reconstruction and its counterfactuals, all at the model's resolution.

    Attributes:
        image: ``(H, W)`` float32 in [0, 1], the input resized to the model.
        inversion: The image's :class:`Inversion` (one row).
        reconstruction: ``(H, W)`` sampled from z_T with the source prompt.
        edited: ``(k, H, W)``, one per request, in request order.
        requests: The k edits.
        strength: The strength every edit was sampled at.
        lever: The strength lever.
        locality: ``"none"`` or ``"mask"``.
        trajectory: The reconstruction's latents after each step (for blended resampling).
        latent_masks: ``[k, 1, h, w]`` edit masks at the latent resolution (``"mask"`` only).
        pixel_masks: ``(k, H, W)`` bool edit masks at the model's resolution (``"mask"`` only).
        responses: ``[k, h, w]`` the response maps the masks were cut from (``"mask"`` only).
        reference: ``(H, W)``, what the edits are compared with (difference maps, the cycle's baseline):
            the decoded z_0 of the input with the inversion background, else the reconstruction.
        background: ``"inversion"`` or ``"reconstruction"`` (what a masked edit keeps outside its mask).
        guide: The edits' :class:`GeneratorGuidance`, one row per request, holding G's reading of
            ``reference`` (the ``generator`` lever's retries and the ``hold`` variant).
    """

    image: np.ndarray
    inversion: Inversion
    reconstruction: np.ndarray
    edited: np.ndarray
    requests: list[EditRequest]
    strength: float
    lever: str
    locality: str = "none"
    trajectory: list[torch.Tensor] = field(default_factory=list)
    latent_masks: torch.Tensor | None = None
    pixel_masks: np.ndarray | None = None
    responses: torch.Tensor | None = None
    reference: np.ndarray | None = None
    background: str = "reconstruction"
    guide: GeneratorGuidance | None = None


def model_input(components: DiffusionComponents, image: np.ndarray) -> np.ndarray:
    """An xray-convention image ``(H, W)`` resized to the model's square input, float32 in [0, 1]."""
    size = components.image_size
    return image.astype(np.float32) if image.shape == (size, size) else resize(image, size)


@torch.no_grad()
def invert_image(
    components: DiffusionComponents,
    image: np.ndarray,
    findings: Sequence[str],
    steps: int = 50,
    fixed_point: int = 0,
    prompt: str | None = None,
) -> Inversion:
    """Encode and DDIM-invert one image ``(H, W)`` at the model's size with prompt(findings), guidance 1.

    ``prompt`` replaces the structured prompt of ``findings`` (a model trained on report text).
    """
    pixels = to_tensor(model_input(components, image)[None], "minus_one_one")
    device = next(components.unet.parameters()).device
    text = build_prompt(findings) if prompt is None else prompt
    return invert(components, pixels.to(device), [text], steps, fixed_point)


@dataclass
class BlendWithFirstRow:
    """Latent blending inside one batch whose row 0 is the reconstruction.

    The reconstruction's trajectory does not depend on the edits, so instead of sampling it first
    (T calls at batch 1) it rides in the edits' batch: after every step, rows 1.. keep row 0's fresh
    latents outside their masks (the same arithmetic as :class:`Blend` with the recorded trajectory),
    and row 0's latents are recorded for later retries.

    Attributes:
        masks: ``[N - 1, 1, h, w]`` in [0, 1], one per edit row (rows 1..N-1).
        trajectory: Receives row 0's latents ``[1, c, h, w]`` after every step.
    """

    masks: torch.Tensor
    trajectory: list[torch.Tensor]

    def callback(self, rows: slice):
        """The step callback for a :func:`sample_rows` call whose first chunk holds every row."""
        if rows.start not in (0, None):
            raise ValueError("BlendWithFirstRow needs the reconstruction and every edit in one batch.")

        def blend(i: int, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            background = z[:1]
            self.trajectory.append(background.detach().clone())
            return torch.cat([background, self.masks * z[1:] + (1 - self.masks) * background])

        return blend


@torch.no_grad()
def counterfactuals(
    components: DiffusionComponents,
    image: np.ndarray,
    requests: Sequence[EditRequest],
    steps: int = 50,
    strength: float = 1.0,
    lever: str = DEFAULT_LEVER,
    batched: bool = True,
    inversion: Inversion | None = None,
    fixed_point: int = 0,
    locality: str = "none",
    background: str = DEFAULT_BACKGROUND,
    source_text: str | None = None,
    reader: Reader | None = None,
) -> Counterfactuals:
    """Invert once, then sample the reconstruction and every edit of the image from the same z_T.

    Args:
        components: The tailored model (eval mode).
        image: ``(H, W)`` float32 in [0, 1], any size (resized to the model's).
        requests: Edits of this image (:func:`plan_edits`); all share one source prompt.
        steps: DDIM steps T.
        strength: Edit strength (1 = the paper's plain edit).
        lever: Strength lever (see the module docstring).
        batched: All rows in one UNet batch (False: one row at a time; same result, less memory).
        inversion: A finished inversion of this image to reuse (adaptive strength resamples from it).
        fixed_point: Fixed-point iterations per inversion step.
        locality: ``"none"`` (edit everywhere, the paper's) or ``"mask"`` (estimate each edit's region
            while inverting and keep a background outside it, :func:`invert_with_masks`);
            ``inversion`` is then recomputed.
        background: With ``"mask"``, what an edit keeps outside its mask: ``"inversion"`` (the
            inversion's own latents, so outside the mask the counterfactual is the input's VAE round
            trip; the reconstruction then rides in the edits' batch) or ``"reconstruction"`` (the
            reconstruction's trajectory, sampled first).
        source_text: The image's own prompt when there are no requests and the model reads report text
            (with requests, theirs is used).
        reader: G's finding logits with their names in ``reader.findings``
            (:func:`cvlm.generators.features.reader`), for the ``generator`` lever.

    Returns:
        :class:`Counterfactuals`.

    Raises:
        ValueError: If the requests do not share one source, or the generator lever has no reader.
    """
    sources = {(r.source, r.source_prompt) for r in requests}
    if len(sources) > 1:
        raise ValueError("All edits of one call must start from the same findings (one image).")
    if locality not in LOCALITIES:
        raise ValueError(f"locality must be one of {LOCALITIES}, got {locality!r}.")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}.")
    source, source_prompt = next(iter(sources)) if sources else ((), source_text or build_prompt(()))
    guide = None
    if lever == "generator" and reader is None:
        raise ValueError("The generator lever needs the generator's reader (cvlm.generators.reader).")
    if reader is not None:
        guide = GeneratorGuidance.for_requests(
            components, reader, reader.findings, model_input(components, image), requests
        )
    masks = pixel_masks = responses = None
    inverted: list[torch.Tensor] = []
    if locality == "mask":
        inversion, masks, pixel_masks, responses = invert_with_masks(
            components, image, requests, steps, fixed_point, record=inverted
        )
    elif inversion is None:
        inversion = invert_image(components, image, source, steps, fixed_point, prompt=source_prompt)
    edit_prompts = [r.prompt for r in requests]
    together = masks is not None and bool(requests) and (background == "inversion" or batched)
    if together:
        # The reconstruction rides in the edits' batch as row 0; only the edits' background differs.
        if background == "inversion":
            # Sampling step i ends at the noise level inversion step T-1-i started from; the last step
            # ends at z_0, so outside its mask an edit returns the input's own latents.
            trajectory = inverted[::-1]
            blend: Blend | BlendWithFirstRow = Blend(
                torch.cat([torch.ones_like(masks[:1]), masks]), trajectory
            )
        else:
            trajectory = []
            blend = BlendWithFirstRow(masks, trajectory)
        rows = sample_rows(
            components,
            inversion.noise.expand(len(requests) + 1, -1, -1, -1),
            [source_prompt, *edit_prompts],
            [source_prompt] * (len(requests) + 1),
            steps,
            strength,
            lever,
            batch_size=len(requests) + 1 if batched else 1,
            blend=blend,
            guide=guide.select([None, *range(len(requests))]) if guide is not None else None,
        )
        reconstruction, edited = rows[0], rows[1:]
        reference = (
            from_tensor(decode_latents(components, inverted[0]).cpu())[0]
            if background == "inversion"
            else reconstruction
        )
    else:
        background = "reconstruction"
        trajectory = []
        reconstruction = sample_rows(
            components, inversion.noise, [source_prompt], None, steps, record=trajectory
        )[0]
        edited = np.zeros((0, *reconstruction.shape), np.float32)
        if requests:
            edited = sample_rows(
                components,
                inversion.noise.expand(len(requests), -1, -1, -1),
                edit_prompts,
                [source_prompt] * len(requests),
                steps,
                strength,
                lever,
                batch_size=len(requests) if batched else 1,
                blend=Blend(masks, trajectory) if masks is not None else None,
                guide=guide,
            )
        reference = reconstruction
    if guide is not None:
        # Retries are judged against G's reading of the reference (the reconstruction), not of the input:
        # hold the other findings there (the round trip may already have changed one; holding the input's
        # reading would then add it back, which the cycle counts as collateral).
        guide = guide.reading(np.asarray(reference, np.float32))
    return Counterfactuals(
        image=model_input(components, image),
        inversion=inversion,
        reconstruction=reconstruction,
        edited=edited,
        requests=list(requests),
        strength=strength,
        lever=lever,
        locality=locality,
        trajectory=trajectory,
        latent_masks=masks,
        pixel_masks=pixel_masks,
        responses=responses,
        reference=np.asarray(reference, np.float32),
        background=background,
        guide=guide,
    )


__all__ = [
    "BACKGROUNDS",
    "DEFAULT_BACKGROUND",
    "DEFAULT_LEVER",
    "DEFAULT_SCHEDULE",
    "GENERATOR_GUIDANCE_BELOW",
    "GENERATOR_STEP",
    "HOLD_STRENGTH",
    "LATE_GUIDANCE_BELOW",
    "LEVERS",
    "LOCALITIES",
    "PIN_WEIGHT",
    "SMALLER_MASKS",
    "SPARE_VARIANTS",
    "Blend",
    "BlendWithFirstRow",
    "Counterfactuals",
    "EditRequest",
    "GeneratorGuidance",
    "Reader",
    "check_finding_names",
    "core_masks",
    "counterfactuals",
    "invert_image",
    "invert_with_masks",
    "keep_others",
    "model_input",
    "plan_edits",
    "sample_rows",
    "stronger_strength",
    "weaker_strength",
    "wider_masks",
]
