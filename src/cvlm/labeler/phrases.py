# ruff: noqa: E501 (regular expressions read better unbroken)
r"""Vocabularies of the rule-based labeler: mentions per class, negation and uncertainty cues.

Everything here is a regular-expression fragment matched on lower-cased text with ``\\b`` word
boundaries added around it by :mod:`cvlm.labeler.rules`. The lists were written for this project
from radiology reporting conventions; the CheXpert labeler (stanfordmlgroup/chexpert-labeler, MIT)
and NegBio were read for their conventions (which mention counts for which class, what negates and
what makes a mention uncertain), and deviations from them are marked ``CheXpert:`` below.

Mention kinds:

* ``plain``: the phrase names the finding ("cardiomegaly", "left pleural effusion"); positive unless
  negated or uncertain.
* ``neutral``: the phrase names an anatomical structure whose *description* decides ("heart size",
  "cardiomediastinal silhouette"); see :data:`SIZE_CUES`. Without a cue it is not a mention.
* ``implied``: a second class the phrase implies as uncertain when it is positive or uncertain
  (CheXpert: "CHF" is an Edema mention and an uncertain Cardiomegaly).
* ``uncertain``: the phrase itself is hedged ("pulmonary vascular congestion" for Edema, "blunting of
  the costophrenic angle" for Pleural Effusion); uncertain unless negated.
"""

from __future__ import annotations

OTHER = "_other"
"""Pseudo-class: abnormalities outside the 13 classes. A positive or uncertain one makes No Finding blank."""

PLAIN, NEUTRAL, UNCERTAIN_KIND, IMPLIED = "plain", "neutral", "uncertain", "implied"

# (pattern, {class: kind}). Longer patterns are tried first, so "nodular opacity" wins over "opacity".
MENTIONS: list[tuple[str, dict[str, str]]] = [
    # ------------------------------------------------------------------ Enlarged Cardiomediastinum
    (
        r"widen(?:ed|ing) (?:of (?:the )?)?(?:superior |upper )?(?:cardio)?mediastin(?:um|al (?:silhouette|contours?))",
        {"Enlarged Cardiomediastinum": PLAIN},
    ),
    (
        r"(?:superior |upper )?(?:cardio)?mediastinal (?:widening|enlargement|prominence)",
        {"Enlarged Cardiomediastinum": PLAIN},
    ),
    (
        r"(?:enlargement|prominence) of the (?:cardio)?mediastin(?:um|al (?:silhouette|contours?))",
        {"Enlarged Cardiomediastinum": PLAIN},
    ),
    (
        r"(?:cardio)?mediastinal (?:silhouettes?|contours?|configuration|shadow|width|structures)",
        {"Enlarged Cardiomediastinum": NEUTRAL},
    ),
    (r"cardiomediastinum|mediastinum", {"Enlarged Cardiomediastinum": NEUTRAL}),
    # ---------------------------------------------------------------------------- Cardiomegaly
    (
        r"cardiomegaly|cardiac (?:enlargement|megaly)|cardio-megaly|cardiomegally|cardiomeglay",
        {"Cardiomegaly": PLAIN},
    ),
    (r"(?:enlarged|large|prominent) (?:(?:size of the )?heart|cardiac silhouette)", {"Cardiomegaly": PLAIN}),
    (r"enlargement of the (?:heart|cardiac silhouette)", {"Cardiomegaly": PLAIN}),
    (
        r"(?:heart|cardiac) (?:size|silhouettes?|contours?|shadow|diameter|dimensions?)",
        {"Cardiomegaly": NEUTRAL},
    ),
    (r"size of the (?:heart|cardiac silhouette)", {"Cardiomegaly": NEUTRAL}),
    (r"(?:the )?heart(?! failure| valve| rate)", {"Cardiomegaly": NEUTRAL}),
    # CheXpert: "chf" / "heart failure" are Edema mentions and, when not negated, an uncertain Cardiomegaly.
    (r"(?:congestive )?heart failure|chf|chf exacerbation", {"Edema": PLAIN, "Cardiomegaly": IMPLIED}),
    # ---------------------------------------------------------------------------- Lung Lesion
    (
        r"nodular (?:densit(?:y|ies)|opacit(?:y|ies)|opacification|lesions?)",
        {"Lung Lesion": PLAIN, "Lung Opacity": PLAIN},
    ),
    (r"calcified (?:pulmonary |lung )?nodul(?:e|es|ar)|calcified granulomas?|granulomas?", {OTHER: PLAIN}),
    (
        r"(?:pulmonary |lung |spiculated |cavitary |solitary )?nodul(?:e|es|i)|micronodul(?:e|es|ar)",
        {"Lung Lesion": PLAIN},
    ),
    (
        r"masses|mass(?!ive| effect)|mass-like|masslike|lump|tumou?rs?|neoplasms?|carcinomas?|malignanc(?:y|ies)",
        {"Lung Lesion": PLAIN},
    ),
    (
        r"(?:cavitary|cavitating|pulmonary|lung|parenchymal|spiculated) lesions?|cavitation|cavity",
        {"Lung Lesion": PLAIN},
    ),
    (r"pulmonary metastas[ie]s|lung metastas[ie]s|metastatic (?:pulmonary )?nodules", {"Lung Lesion": PLAIN}),
    # ---------------------------------------------------------------------------- Edema
    (r"(?:soft tissue|subcutaneous|chest wall) edema|anasarca", {OTHER: PLAIN}),
    (
        r"(?:pulmonary |interstitial |alveolar |perihilar |airspace |mild |frank )?o?edema|edematous|kerley b?(?:-| )?lines|septal lines",
        {"Edema": PLAIN},
    ),
    # CheXpert: congestion / indistinctness / vascular prominence are uncertain Edema.
    (
        r"(?:pulmonary )?(?:vascular|venous) (?:congestion|engorgement|prominence|redistribution)|pulmonary congestion|congestion|"
        r"(?:fluid|volume) overload|(?:vascular|perihilar|hilar) (?:indistinctness|haziness|blurring)|indistinct(?:ness)? (?:of )?(?:the )?(?:pulmonary )?(?:vessels|vasculature|vascular markings)|"
        r"prominen(?:t|ce of the) (?:pulmonary )?(?:vasculature|vessels|interstitial markings)|cephalization|peribronchial cuffing",
        {"Edema": UNCERTAIN_KIND},
    ),
    # ---------------------------------------------------------------------------- Consolidation
    (r"consolidat(?:ion|ions|ed|ive|ing)|air bronchograms?", {"Consolidation": PLAIN}),
    # ---------------------------------------------------------------------------- Pneumonia
    (
        r"(?:broncho)?pneumonias?|pneumonic|infectious process|infectious|infections?|infected|pna",
        {"Pneumonia": PLAIN},
    ),
    # ---------------------------------------------------------------------------- Atelectasis
    (
        r"atelecta(?:sis|ses|tic)|atelectsis|atelactasis|atelectais|collapsed? (?:of (?:the )?)?(?:right |left )?(?:upper |middle |lower )?(?:lobe|lung)|lobar collapse|(?:lung|lobe|lobar) collapse|volume loss|subsegmental collapse",
        {"Atelectasis": PLAIN},
    ),
    (r"collapse(?! of the vertebra| fracture)", {"Atelectasis": PLAIN}),
    # ---------------------------------------------------------------------------- Pneumothorax
    (
        r"(?:hydro|hemo)?pneumothora(?:x|ces)|pneumothoraxes|ptx|pnuemothorax|pneumothroax",
        {"Pneumothorax": PLAIN},
    ),
    # ---------------------------------------------------------------------------- Pleural Effusion
    (r"(?:pericardial|joint|knee|shoulder) effusions?", {OTHER: PLAIN}),
    (
        r"(?:pleural )?effusions?|effusoin|pleural fluid|hydrothorax|hemothorax|fluid (?:in|within|tracking (?:into|along)) the (?:minor |major |right |left )*fissure|layering fluid|loculated fluid",
        {"Pleural Effusion": PLAIN},
    ),
    # Blunting alone may be a small effusion or pleural thickening. CheXpert: not a mention.
    (
        r"blunt(?:ing|ed)? (?:of )?(?:the )?(?:right |left |bilateral |posterior |lateral )*costophrenic (?:angles?|sulci|sulcus|recess(?:es)?)|"
        r"(?:right |left |bilateral |posterior |lateral )*costophrenic (?:angles?|sulci|sulcus) (?:are |is )?(?:mildly |minimally |slightly )?blunt(?:ed|ing)?",
        {"Pleural Effusion": UNCERTAIN_KIND},
    ),
    (r"(?:costophrenic|cp) (?:angles?|sulci|sulcus)", {"Pleural Effusion": NEUTRAL}),
    # ---------------------------------------------------------------------------- Pleural Other
    (
        r"pleural (?:thickening|plaques?|scar(?:ring)?|calcifications?|fibrosis|disease)|calcified pleural (?:plaques?|thickening)|"
        r"pleuro-?parenchymal (?:scar(?:ring)?|thickening|changes?)|pleural-parenchymal (?:scar(?:ring)?|thickening)|fibrothorax|apical (?:pleural )?caps?|apical pleural thickening|"
        r"pleuro-?pericardial scar(?:ring)?",
        {"Pleural Other": PLAIN},
    ),
    # CheXpert counts "fibrosis" as Pleural Other.
    (
        r"(?:pulmonary |interstitial )?fibros(?:is|ing)|fibrotic (?:changes?|lung disease)",
        {"Pleural Other": PLAIN},
    ),
    # ---------------------------------------------------------------------------- Fracture
    (r"fractur(?:e|es|ed|ing)|fx|fxs", {"Fracture": PLAIN}),
    # ---------------------------------------------------------------------------- Lung Opacity
    (r"pleural (?:scar|based)", {OTHER: PLAIN}),
    (r"(?:bone|soft tissue|osseous|metallic|calcific) densit(?:y|ies)", {OTHER: PLAIN}),
    (
        r"opacit(?:y|ies)|opacificat(?:ion|ions)|opacified|opaque lung|airspace (?:disease|process|densit(?:y|ies))|air-space disease|air space (?:disease|process)|"
        r"infiltrat(?:e|es|ion|ive)|interstitial (?:markings?|pattern|lung disease|abnormalit(?:y|ies)|changes?|process|prominence|thickening)|"
        r"reticular (?:pattern|markings?|opacities|changes?)|reticulation|reticulonodular|parenchymal scarring|scar(?:ring|s)?|"
        r"peribronchial thickening|bronchial wall thickening|wall thickening|haz(?:iness|y)|ground[- ]glass|increased densit(?:y|ies)|densit(?:y|ies)|"
        r"decreased translucency|increased markings|"
        r"(?:increased|prominent|coarse|coarsened|crowded) (?:interstitial |lung |bronchovascular |pulmonary )markings|bronchiectasis|bronchiectatic",
        {"Lung Opacity": PLAIN},
    ),
    # ---------------------------------------------------------------------------- Support Devices
    (
        r"(?:endotracheal|et|nasogastric|ng|orogastric|og|feeding|dobhoff|dobbhoff|chest|pleural|tracheostomy|trach|gastric|enteric|jejunostomy|nasoenteric|"
        r"mediastinal|pigtail|sump|drainage|thoracostomy|ett|ngt) tubes?|"
        r"ett|ngt|ogt|tubes?|trach|tracheostomy|catheters?|picc|piccs|port-a-cath|portacath|port|mediport|"
        r"(?:(?:central|venous|arterial|picc|midline|ij|jugular|subclavian|femoral|dialysis|hemodialysis|port|catheter|pa|support|"
        r"monitoring|sided|lumen|tunneled|tunnelled|access|swan-ganz|swan ganz|groin) )+lines?|lines?(?= and tubes)|line tip|"
        r"swan[- ]ganz|swan|cordis|introducer|sheath|"
        r"pacemaker|pacer|(?:pacer|pacemaker|pacing|icd|aicd|epicardial|transvenous|ventricular|atrial|rv|ra|lv|defibrillator|ekg|ecg) (?:leads?|wires?)|"
        r"icd|aicd|defibrillator|defib|loop recorder|guide ?wires?|"
        r"(?:prosthetic|mechanical|bioprosthetic|porcine) (?:aortic |mitral |tricuspid )?valves?|valve (?:replacement|prosthesis)|tavr|tavi|"
        r"stents?|coils?|drains?|cannulas?|ecmo|impella|lvad|balloon pump|iabp|"
        r"hardware|plates?(?![- ]?like)|screws?|rods?|arthroplast(?:y|ies)|prosthes[ie]s|spinal fusion|"
        r"devices?|apparatus|monitoring (?:leads|devices)|equipment|electrodes?",
        {"Support Devices": PLAIN},
    ),
    # ---------------------------------------------------------------------------- other abnormalities
    # CheXpert's No Finding list: abnormalities outside the 13 classes.
    (
        r"emphysema(?:tous)?|copd|chronic obstructive|hyperinflat(?:ion|ed)|hyperexpan(?:sion|ded)|hyperlucen(?:cy|t)|bullae|bullous|blebs?|"
        r"(?:hemi)?diaphragm(?:atic)? elevation|elevat(?:ed|ion of the) (?:right |left )?(?:hemi)?diaphragm|elevation|eventration|"
        r"scoliosis|kyphosis|kyphotic|degenerat(?:ive|ion)|osteophyt(?:es|osis)|spondylosis|calcifi(?:ed|cation|cations|c)|atherosclero(?:sis|tic)|"
        r"tortuo(?:us|sity)|unfolding of the (?:thoracic )?aorta|unfolded|ectatic|aneurysm(?:al)?|aortic (?:disease|enlargement|dilatation)|"
        r"hernia|bronchospasm|asthma|bronchiolitis|bronchitis|airways? disease|thickening|aspiration|contusions?|osteopenia|osteopenic|"
        r"metasta(?:sis|ses|tic)|pneumomediastinum|pneumoperitoneum|free air|subcutaneous (?:emphysema|air|gas)|osteodystrophy|"
        r"irregular lucency|inflam(?:mation|matory)|fissure|(?:pulmonary (?:arterial |artery )?)hypertension|prominen(?:t|ce)|"
        r"lymphadenopathy|adenopathy|deformit(?:y|ies)|hemorrhage|hematoma|radiopaque|aerophagia|arthropathy|thoracentesis|"
        r"bullet|foreign bod(?:y|ies)|dextro(?:cardia|position)|situs inversus|lucenc(?:y|ies)|cysts?|cystic",
        {OTHER: PLAIN},
    ),
]

# Descriptions that decide a neutral mention. Checked in this order at the same position, so
# "not enlarged" wins over "enlarged" and "normal to mildly enlarged" over "normal".
SIZE_CUES: list[tuple[str, int]] = [
    # uncertain: hedged size or a description that neither confirms nor excludes it (CheXpert: "stable
    # cardiac silhouette", "heart size is unchanged", "borderline heart size" are uncertain).
    (
        r"(?:top|upper|high)[- ]normal to (?:mildly |slightly |minimally )?(?:enlarged|large)|normal to (?:mildly |slightly |minimally )?(?:enlarged|large|increased)|"
        r"borderline|equivocal|difficult to (?:assess|evaluate)|(?:cannot|can not|could not) be (?:assessed|evaluated)|not (?:well )?(?:assessed|evaluated|seen|visualized)|"
        r"obscur(?:ed|es|ing)|exaggerated|accentuated|magnified|(?:may|might|could) be (?:mildly |slightly )?(?:enlarged|increased|widened|prominent)|"
        r"possibl[ey] (?:mildly |slightly )?(?:enlarged|widened)|questionabl[ey] (?:enlarged|widened)|stable|unchanged|no (?:significant |substantial |interval )?change|similar|grossly stable|not changed|"
        r"limited evaluation|poorly (?:assessed|evaluated|seen)",
        -1,
    ),
    # negative
    (
        r"not (?:be )?(?:significantly |substantially |appreciably )?(?:enlarged|increased|widened|large)|"
        r"(?:normal|top[- ]normal|upper[- ]normal|high[- ]normal|upper limits? of normal|upper range of normal|within normal limits|within the normal range|unremarkable|normal size|normal-sized|normally sized|"
        r"normal in (?:size|contour|configuration)|not abnormal|wnl|small|unremarkable)",
        0,
    ),
    # positive
    (
        r"enlarg(?:ed|ement|ing)|large|increas(?:ed|ing)|widen(?:ed|ing)|prominen(?:t|ce)|cardiomegaly|dilat(?:ed|ation)|massive(?:ly)?|globular|"
        r"abnormal|bulging|(?:mildly|moderately|markedly|severely) (?:enlarged|increased)",
        1,
    ),
]
"""(pattern, label) for neutral mentions; the nearest cue after the mention (or an adjective just before) decides."""

EFFUSION_ANGLE_CUES: list[tuple[str, int]] = [
    (r"sharp(?:ly defined)?|clear|normal|preserved|unremarkable|well[- ]defined", 0),
    (r"blunt(?:ed|ing)?|obscured|not (?:well )?(?:seen|visualized)|excluded from|cut off", -1),
]
"""Cues for "costophrenic angle" mentions: "sharp costophrenic angles" is a negative Pleural Effusion."""

# Phrases that contain a negation word but do not negate the finding that follows ("no change in the
# moderate effusion"): masked before any cue is searched. NegEx calls these pseudo-negations.
PSEUDO_NEGATIONS = (
    r"no (?:significant |substantial |appreciable |definite |major |interval |apparent |marked |real |further )?(?:interval )?"
    r"(?:change|changes|increase|decrease|worsening|improvement|progression|difference|enlargement of the effusion)|"
    r"not (?:significantly |substantially |appreciably |markedly )?(?:changed|increased|decreased|worsened|improved|different)|"
    r"without (?:significant |substantial |appreciable |interval )?(?:change|interval change|progression)|"
    r"not only|no longer (?:requires|needed)|gram[- ]negative|not been (?:changed|adjusted)|"
    r"(?:cannot|can not|can't|could not) be (?:assessed|evaluated|seen|visualized)"
)

# Negation cues before the mention (scope: to the mention, inside the clause).
PRE_NEGATIONS = (
    r"no|not|without|free of|negative for|absence of|absent|lack of|resolution of|resolved|resolving of|clearing of|cleared of|"
    r"removal of|removed|interval removal of|status post removal of|s/p removal of|rule out|ruled out|r/o|"
    r"history of|h/o|nor|neither|none|never|denies|deny|"
    r"no (?:radiographic |definite |obvious |convincing |focal |evidence |signs? |findings? )+(?:of|for|to suggest)?|"
    r"no evidence(?: of)?|no signs? of|no findings? (?:of|to suggest|suggestive of)|not (?:demonstrate|show|reveal)|"
    r"(?:there is|there are) no|interval resolution of|near(?:ly)? complete resolution of"
)

# Negation cues after the mention, e.g. "pneumothorax is not seen", "the ET tube has been removed".
POST_NEGATIONS = (
    r"(?:is|are|was|were|has been|have been)? ?(?:not|no longer) (?:clearly |definitely |convincingly |confidently |well )?"
    r"(?:seen|identified|present|visualized|visible|appreciated|demonstrated|evident|detected|noted|observed|apparent|included|"
    r"enlarged|widened|increased)|"
    r"(?:has|have|had)? ?(?:completely |entirely |nearly |since |now |largely |essentially |interval )?(?:resolved|cleared|disappeared|been removed|"
    r"been withdrawn|been discontinued|been resolved)|"
    r"(?:is|are|was|were|has been|have been) (?:now )?(?:removed|withdrawn|discontinued|absent|resolved|gone)|removed|"
    r"(?:is|are|appears?|remains?|seems?) (?:otherwise )?(?:normal|unremarkable|within normal limits|negative|clear)|"
    r"within normal limits|(?:is|are) no longer|absent|resolved|negative"
)

# Uncertainty that already contains a negation word ("cannot be excluded"): checked before negation.
PRE_NEGATION_UNCERTAINTY = (
    r"(?:cannot|can not|can't|could not|may not|not) (?:be )?(?:entirely |completely |totally |definitely |fully |definitively |reliably )?"
    r"(?:excluded|exclude|ruled out|rule out|excluded|assessed|evaluated)|"
    r"not (?:entirely |completely |totally |definitely |fully )?(?:excluded|ruled out)|"
    r"difficult to (?:exclude|rule out)|no (?:definite )?(?:way|means) to exclude|"
    r"not (?:well |clearly )?(?:seen|visualized|evaluated|assessed)|"
    r"(?:cannot|can not|can't) (?:be )?(?:differentiated|distinguished)|"
    r"unable to (?:exclude|rule out|assess|evaluate)"
)

# Uncertainty cues before the mention (scope: to the mention, inside the clause).
PRE_UNCERTAINTY = (
    r"may|might|could|would|possible|possibly|probable|probably|likely|unlikely|presumed|presumably|presumptive|"
    r"questionable|questionably|question of|suspicious|suspected|suspect|suspicion|concerning|concern|worrisome|worry|"
    r"suggestive|suggesting|suggests?|suggestion|compatible with|consider|considered|considering|differential|"
    r"equivocal|indeterminate|uncertain|unclear|raising the possibility|possibility|potential(?:ly)?|atypical|"
    r"evaluate for|assess for|to evaluate|to exclude|correlat(?:e|ion)|query|favor(?:ed|s)?|favour(?:ed|s)?|"
    r"cannot|can not|can't"
)

# Uncertainty cues that only reach the mention right after them ("atelectasis or pneumonia",
# "? pneumonia"); up to three words may stand between.
ADJACENT_UNCERTAINTY = r"or|versus|vs\.?|v\.s\.|and/or|\?"

# Uncertainty cues after the mention, e.g. "atelectasis is likely", "pneumonia?".
POST_UNCERTAINTY = (
    r"(?:is|are|was|were) (?:also |still |more |most |less |felt to be |thought to be )?"
    r"(?:possible|possibly present|suspected|questioned|likely|probable|considered|favored|a consideration|in the differential|"
    r"not excluded|not ruled out|difficult to (?:exclude|assess|evaluate)|(?:partially |partly )?obscured)|"
    r"(?:may|might|could) (?:also |still )?(?:be present|be seen|exist|be noted|be developing|be superimposed|be obscured|"
    r"be contributing|contribute|coexist|be included)|"
    r"\?|or|versus|vs\.?|and/or|possible|suspected|questioned|(?:partially |partly )?obscured"
)

# Words that end the scope of a cue: a cue never reaches past them (they start a new clause).
CLAUSE_BREAKS = (
    r"but|however|although|though|whereas|while|which|except|aside from|apart from|other than|"
    r"with the exception of|given|since|because|in addition|additionally|otherwise|where|as well as|"
    r"and there|with (?:a |an |the )?(?:new|persistent|stable|small|large|moderate|mild|minimal|trace|tiny|residual|slight)"
)

# After ", " or " and " or " with ", one of these starts a new noun phrase or clause, so the scope of a
# pre-negation ends ("no effusion, and moderate cardiomegaly").
NEW_PHRASE_STARTS = (
    r"there|the|a|an|this|these|which|mild|mildly|moderate|moderately|small|large|severe|trace|tiny|minimal|minimally|"
    r"stable|persistent|persisting|new|newly|increased|increasing|decreased|decreasing|worsened|worsening|improved|improving|"
    r"unchanged|residual|slight|slightly|marked|markedly|extensive|known|chronic|old|healed|healing|prominent|"
    r"enlarged|interval|again|redemonstrat\w*|continued|re-demonstrat\w*|bibasilar|is|are|was|were|has|have|remains?"
)

# Words allowed between a mention and a cue that follows it ("pleural effusion or pneumothorax is not
# seen", "the tube, previously seen, has been removed"); any other word means the cue has another subject.
POST_GAP_WORDS = frozenset(
    [
        "and",
        "or",
        "the",
        "a",
        "an",
        "of",
        "left",
        "right",
        "bilateral",
        "bilaterally",
        "small",
        "large",
        "any",
        "focal",
        "both",
        "also",
        "definite",
        "significant",
        "acute",
        "sided",
        "lower",
        "upper",
        "middle",
        "lobe",
        "lobes",
        "lung",
        "lungs",
        "apical",
        "basilar",
        "basal",
        "residual",
        "new",
        "evidence",
        "previously",
        "seen",
        "noted",
        "described",
        "visualized",
        "demonstrated",
        "prior",
        "on",
        "study",
        "exam",
        "examination",
        "radiograph",
        "from",
        "earlier",
        "is",
        "are",
        "has",
        "have",
        "been",
        "there",
        "no",
        "appreciable",
        "discrete",
        "visible",
        "frank",
        "overt",
        "moderate",
        "mild",
        "tiny",
        "trace",
        "side",
        "sides",
        "either",
        "pleural",
        "radiograph",
        "line",
        "tube",
        "tip",
        "catheter",
        ",",
        ".",
        "now",
        "currently",
        "again",
        "still",
    ]
)

# Verbs that separate a mention from a later cue that belongs to another subject ("effusion is stable
# and pneumothorax is not seen").
VERBS = (
    r"is|are|was|were|has|have|had|remains?|remained|appears?|seems?|persists?|demonstrates?|shows?|"
    r"noted|seen|identified|present|persisting|measures?|measuring|projects?|terminates?|extends?"
)

SECTION_HEADERS_SKIPPED = (
    "examination",
    "exam",
    "indication",
    "indications",
    "history",
    "clinical history",
    "clinical information",
    "clinical indication",
    "reason for exam",
    "reason for examination",
    "reason for study",
    "technique",
    "comparison",
    "comparisons",
    "procedure",
    "notification",
    "type of examination",
    "ordering physician",
    "referring physician",
)
"""Report sections that do not describe the image (MIMIC-CXR headers); their text is not labeled."""
