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

IGNORED = "_ignored"
"""Pseudo-class: phrases that only stop a shorter mention from matching ("respiratory failure")."""

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
    (
        r"cardiomediastinum|mediastinum|(?:cardio)?mediastinal(?=,? and hilar)",
        {"Enlarged Cardiomediastinum": NEUTRAL},
    ),
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
    (
        r"size of the (?:heart|cardiac silhouette)|cardiac(?=,? and (?:mediastinal|hilar))",
        {"Cardiomegaly": NEUTRAL},
    ),
    (r"(?:the )?heart(?! failure| valve| rate)", {"Cardiomegaly": NEUTRAL}),
    (
        r"(?:respiratory|renal|kidney|liver|hepatic|multiorgan|multi-organ|multisystem|graft|device) failure",
        {IGNORED: PLAIN},
    ),
    # CheXpert: "chf" / "heart failure" are Edema mentions and, when not negated, an uncertain Cardiomegaly;
    # a bare "failure" on a chest radiograph ("no signs of failure") is heart failure.
    (
        r"(?:congestive )?heart failure|chf|chf exacerbation|(?:cardiac |left ventricular )?failure",
        {"Edema": PLAIN, "Cardiomegaly": IMPLIED},
    ),
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
        r"(?:thyroid|breast|soft tissue|chest wall|neck|(?:anterior |posterior |superior |middle )?mediastinal|pericardial|pleural|paratracheal) (?:mass(?:es)?|lesions?)|"
        r"(?:old|prior|previous|remote|healed) (?:granulomatous )?(?:infection|disease)|granulomatous (?:infection|disease|process)|"
        r"breast (?:implants?|prosthes[ie]s|augmentation)",
        {OTHER: PLAIN},
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
        r"cephalization|peribronchial cuffing",
        {"Edema": UNCERTAIN_KIND},
    ),
    # ---------------------------------------------------------------------------- Consolidation
    (
        r"pulmonary (?:arterial |artery )?hypertension|(?:enlarged|prominent|dilated) (?:central )?pulmonary arter(?:y|ies)|pulmonary outflow",
        {OTHER: PLAIN},
    ),
    # The vessels' description decides: engorged or prominent vessels are an uncertain Edema (CheXpert).
    (
        r"(?:pulmonary |lung |central |perihilar |hilar )*(?:vascularity|vasculature|vascular markings|vessels)",
        {"Edema": NEUTRAL},
    ),
    (r"pulmonary venous hypertension|(?:early|mild) (?:heart |cardiac )?failure", {"Edema": UNCERTAIN_KIND}),
    (r"consolidat(?:ion|ions|ed|ive|ing)|air bronchograms?", {"Consolidation": PLAIN}),
    # ---------------------------------------------------------------------------- Pneumonia
    (
        r"(?:broncho)?pneumonias?|pneumonic|infectious process|infectious|infections?|infected|pna",
        {"Pneumonia": PLAIN},
    ),
    # ---------------------------------------------------------------------------- Atelectasis
    (
        r"atelecta(?:sis|ses|tic)|atelectsis|atelactasis|atelectais|collapsed? (?:of (?:the )?)?(?:right |left )?(?:upper |middle |lower )?(?:lobe|lung)|lobar collapse|(?:lung|lobe|lobar) collapse|volume loss|loss of (?:lung |lobar )?volume|subsegmental collapse",
        {"Atelectasis": PLAIN},
    ),
    (r"collapse(?! of the vertebra| fracture)", {"Atelectasis": PLAIN}),
    # ---------------------------------------------------------------------------- Pneumothorax
    (r"(?:hydro|hemo)pneumothora(?:x|ces)", {"Pneumothorax": PLAIN, "Pleural Effusion": PLAIN}),
    (
        r"pleural air(?: collections?)?|pneumothora(?:x|ces)|pneumothoraxes|ptx|pnuemothorax|pneumothroax",
        {"Pneumothorax": PLAIN},
    ),
    # ---------------------------------------------------------------------------- Pleural Effusion
    (r"(?:pericardial|joint|knee|shoulder) effusions?", {OTHER: PLAIN}),
    (
        r"fluid (?:in|within|at|along|layering in) the (?:right |left |bilateral |posterior |lateral )*(?:costophrenic|cp|pleural) (?:angles?|sulci|sulcus|recess(?:es)?|spaces?)|"
        r"(?:pleural )?effusions?|effusoin|pleural fluid|hydrothorax|hemothorax|fluid (?:in|within|tracking (?:into|along)) the (?:minor |major |right |left )*fissure|layering fluid|loculated fluid",
        {"Pleural Effusion": PLAIN},
    ),
    # Blunting alone may be a small effusion or pleural thickening. CheXpert: not a mention.
    (
        r"blunt(?:ing|ed)? (?:of )?(?:the )?(?:right |left |bilateral |posterior |lateral )*costophrenic (?:angles?|sulci|sulcus|recess(?:es)?|xxxx)|"
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
    (r"cystic fibrosis", {OTHER: PLAIN}),
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
        r"peribronchial thickening|bronchial wall thickening|wall thickening|haz(?:iness|y)|ground[- ]glass|increased densit(?:y|ies)|(?:airspace|air space|alveolar|parenchymal|pulmonary|lung|retrocardiac|basilar|bibasilar|patchy|hazy|ill-defined|confluent|streaky|linear) densit(?:y|ies)|"
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
        r"swan[- ]ganz|swan|pulmonary arter(?:y|ial) catheter|pa catheter|cordis|introducer|sheath|"
        r"pacemaker|pacer|(?:pacer|pacemaker|pacing|icd|aicd|epicardial|transvenous|ventricular|atrial|rv|ra|lv|defibrillator|ekg|ecg) (?:leads?|wires?)|"
        r"icd|aicd|defibrillator|defib|loop recorder|guide ?wires?|"
        r"(?:prosthetic|mechanical|bioprosthetic|porcine|artificial) (?:aortic |mitral |tricuspid |pulmonic |pulmonary )?valves?|"
        r"(?:spinal |nerve |vagal |vagus |neuro|cardiac |deep brain )?stimulators?|(?:pacemaker |pacer |icd |aicd |battery |pulse )?generators?|"
        r"(?:external |cardiac |ekg |ecg )?monitor(?:ing)? leads?|(?:with|and) (?:two|three|2|3|dual|single|biventricular) leads|"
        r"tips|(?:ivc|greenfield|vena cava) filter|occluder|closure device|watchman|valve (?:replacement|prosthesis)|tavr|tavi|"
        r"stents?|coils?|drains?|cannulas?|ecmo|impella|lvad|balloon pump|iabp|"
        r"hardware|plates?(?![- ]?like)|screws?|rods?|arthroplast(?:y|ies)|prosthes[ie]s|spinal fusion|"
        r"devices?|apparatus|monitoring (?:leads|devices)|equipment|electrodes?|(?:median )?(?:sternotomy|sternal) (?:wires?|sutures?)",
        {"Support Devices": PLAIN},
    ),
    # ---------------------------------------------------------------------------- other abnormalities
    # CheXpert's No Finding list: abnormalities outside the 13 classes.
    (
        r"emphysema(?:tous)?|copd|ards|densit(?:y|ies)|chronic obstructive|hyperinflat(?:ion|ed)|hyperexpan(?:sion|ded)|hyperlucen(?:cy|t)|bullae|bullous|blebs?|"
        r"(?:hemi)?diaphragm(?:atic)? elevation|elevat(?:ed|ion of the) (?:right |left )?(?:hemi)?diaphragm|elevation|eventration|"
        r"scoliosis|kyphosis|kyphotic|degenerat(?:ive|ion)|osteophyt(?:es|osis)|spondylosis|calcifi(?:ed|cation|cations|c)|atherosclero(?:sis|tic)|"
        r"aneurysm(?:al)?|aortic (?:disease|enlargement|dilatation)|"
        r"hernia|bronchospasm|asthma|bronchiolitis|bronchitis|airways? disease|thickening|aspiration|contusions?|osteopenia|osteopenic|"
        r"metasta(?:sis|ses|tic)|pneumomediastinum|pneumoperitoneum|free air|subcutaneous (?:emphysema|air|gas)|osteodystrophy|"
        r"irregular lucency|inflam(?:mation|matory)|fissure|(?:pulmonary (?:arterial |artery )?)hypertension|prominen(?:t|ce)|"
        r"lymphadenopathy|adenopathy|deformit(?:y|ies)|hemorrhage|hematoma|radiopaque|aerophagia|arthropathy|thoracentesis|"
        r"bullet|foreign bod(?:y|ies)|dextro(?:cardia|position)|situs inversus|cysts?|cystic",
        {OTHER: PLAIN},
    ),
]

# Descriptions that decide a neutral mention. Checked in this order at the same position, so
# "not enlarged" wins over "enlarged" and "normal to mildly enlarged" over "normal".
SIZE_CUES: list[tuple[str, int]] = [
    # uncertain: a hedged size ("borderline heart size", "upper limits of normal or mildly enlarged").
    # CheXpert also counts a bare "stable cardiomediastinal silhouette" as uncertain; cvlm does not (a
    # stable silhouette says nothing about its size): see docs/labeler.md.
    (
        r"(?:(?:at )?(?:the )?(?:top|upper|high)[- ]normal|(?:at )?(?:the )?upper limits?(?: of)?(?: normal)?|normal|borderline) "
        r"(?:to|or) (?:borderline |mildly |slightly |minimally )?(?:enlarged|large|increased|enlargement)|"
        r"borderline|equivocal|difficult to (?:assess|evaluate)|(?:cannot|can not|could not) be (?:assessed|evaluated)|"
        r"not (?:well )?(?:assessed|evaluated|seen|visualized)|obscur(?:ed|es|ing)|exaggerated|accentuated|magnified|"
        r"(?:may|might|could) be (?:mildly |slightly )?(?:enlarged|increased|widened|prominent)|"
        r"possibl[ey] (?:mildly |slightly )?(?:enlarged|widened)|questionabl[ey] (?:enlarged|widened)|"
        r"limited evaluation|poorly (?:assessed|evaluated|seen)",
        -1,
    ),
    # negative
    (
        r"not (?:be )?(?:significantly |substantially |appreciably )?(?:enlarged|increased|widened|large)|"
        r"(?:normal|top[- ]normal|upper[- ]normal|high[- ]normal|(?:upper|top|high) limits? of normal|upper range of normal|within normal limits|"
        r"within the normal range|within (?:the )?limits of normal|unremarkable|normal size|normal-sized|normally sized|"
        r"normal in (?:size|contour|configuration)|not abnormal|wnl|small)",
        0,
    ),
    # positive
    (
        r"enlarg(?:ed|ement|ing)|large|larger|increase|increas(?:ed|ing)|widen(?:ed|ing)|wide|wider|prominen(?:t|ce)|cardiomegaly|"
        r"dilat(?:ed|ation)|massive(?:ly)?|globular|abnormal|bulging",
        1,
    ),
]
"""(pattern, label) for neutral mentions; the nearest cue after the mention (or an adjective just before) decides."""

EFFUSION_ANGLE_CUES: list[tuple[str, int]] = [
    (r"sharp(?:ly defined)?|clear|normal|preserved|unremarkable|well[- ]defined", 0),
    (r"blunt(?:ed|ing)?|obscured|not (?:well )?(?:seen|visualized)|excluded from|cut off", -1),
]
"""Cues for "costophrenic angle" mentions: "sharp costophrenic angles" is a negative Pleural Effusion."""

VESSEL_CUES: list[tuple[str, int]] = [
    (
        r"normal|within normal limits|within (?:the )?limits of normal|unremarkable|not (?:engorged|congested|prominent|increased)",
        0,
    ),
    (
        r"prominen(?:t|ce)|increased|engorge(?:d|ment)|congest(?:ed|ion)|indistinct(?:ness)?|cephaliz(?:ed|ation)|"
        r"redistribut(?:ed|ion)|distended|plethor(?:a|ic)|hazy|blurr(?:ed|ing)|enlarged|upper zone",
        1,
    ),
]
"""Cues for vessel mentions: engorged or prominent vessels are an uncertain Edema; normal ones say nothing."""

# Phrases that contain a negation word but do not negate the finding that follows ("no change in the
# moderate effusion"): masked before any cue is searched. NegEx calls these pseudo-negations.
PSEUDO_NEGATIONS = (
    r"no (?:significant |substantial |appreciable |definite |major |interval |apparent |marked |real |further )?(?:interval )?"
    r"(?:change|changes|increase|decrease|worsening|improvement|progression|difference|enlargement of the effusion)|"
    r"not (?:significantly |substantially |appreciably |markedly )?(?:changed|increased|decreased|worsened|improved|different)|"
    r"without (?:significant |substantial |appreciable |interval )?(?:change|interval change|progression)|"
    r"not only|no longer (?:requires|needed)|previously (?:seen|noted|described|demonstrated|identified|visualized)|gram[- ]negative|not been (?:changed|adjusted)|"
    r"(?:cannot|can not|can't|could not) be (?:assessed|evaluated|seen|visualized)"
)

# A clause that speaks about radiography in general, not about this patient ("fractures may not be
# visible on radiographs", "CT is more sensitive for small nodules"): its mentions are not mentions.
GENERIC_STATEMENTS = (
    r"(?:more |less |most )?sensitive (?:in|for|to)|"
    r"(?:may|might|can|could|are often|is often|are frequently|is frequently) not be (?:demonstrated|seen|visible|apparent|detected|evident)"
)

# Negation cues before the mention (scope: to the mention, inside the clause).
PRE_NEGATIONS = (
    r"no|not|without|free of|clear of|negative for|absence of|absent|lack of|resolution of|resolved|resolving of|clearing of|cleared of|"
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
    r"within normal limits|within (?:the )?(?:limits of normal|normal range)|(?:is|are) no longer|absent|resolved|negative|removal"
)

# Uncertainty that already contains a negation word ("cannot be excluded"): checked before negation.
PRE_NEGATION_UNCERTAINTY = (
    r"(?:cannot|can not|can't|could not|may not|not) (?:be )?(?:entirely |completely |totally |definitely |fully |definitively |reliably )?"
    r"(?:excluded|exclude|ruled out|rule out|excluded|assessed|evaluated)|"
    r"not (?:entirely |completely |totally |definitely |fully )?(?:excluded|ruled out)|"
    r"difficult to (?:exclude|rule out)|no (?:definite )?(?:way|means) to exclude|"
    r"not (?:well|clearly|optimally|adequately) (?:seen|visualized|evaluated|assessed)|"
    r"(?:cannot|can not|can't) (?:be )?(?:differentiated|distinguished)|"
    r"unable to (?:exclude|rule out|assess|evaluate)"
)

# Uncertainty cues before the mention (scope: to the mention, inside the clause).
PRE_UNCERTAINTY = (
    r"may|might|could|would|possible|possibly|probable|probably|likely|unlikely|presumed|presumably|presumptive|"
    r"questionable|questionably|question of|suspicious|suspected|suspect|suspicion|concerning|concern|worrisome|worry|"
    r"suggestive|suggesting|suggests?|suggestion|consider|considered|considering|differential|"
    r"equivocal|indeterminate|uncertain|unclear|borderline|apparent|raising the possibility|possibility|potential(?:ly)?|atypical|"
    r"evaluate for|assess for|to evaluate|evaluation for|assessment for|to exclude|correlat(?:e|ion)|query|favor(?:ed|s)?|favour(?:ed|s)?|"
    r"cannot|can not|can't"
)

# Uncertainty cues that only reach the mention right after them ("atelectasis or pneumonia",
# "? pneumonia"); up to three words may stand between.
ADJACENT_UNCERTAINTY = r"or|versus|vs\.?|v\.s\.|and/or|\?"

# Uncertainty cues after the mention, e.g. "atelectasis is likely", "pneumonia?".
POST_UNCERTAINTY = (
    r"(?:is|are|was|were) (?:also |still |more |most |less |felt to be |thought to be )?(?:possible|likely|probable)"
    r"(?= *(?:$|[.,;:]|present|developing|given|in |at |on |but |although |though |and ))|"
    r"(?:is|are|was|were) (?:also |still |felt to be |thought to be )?"
    r"(?:suspected|questioned|considered|favored|a consideration|a possibility|in the differential|"
    r"not excluded|not ruled out|difficult to (?:exclude|assess|evaluate)|(?:partially |partly )?obscured)|"
    r"(?:may|might|could) (?:also |still )?(?:be present|be seen|exist|be noted|be developing|be superimposed|be obscured|"
    r"be contributing|contribute|coexist|be included)|"
    r"(?:should|must|could|would|may) (?:also )?be (?:considered|excluded|ruled out)|if (?:any|present)|"
    r"\?|or|versus|vs\.?|and/or|(?:partially |partly )?obscured"
)

# A hedge that the finding may be an artefact of technique ("widening of the mediastinum may be due to AP
# technique", "could represent a nipple shadow"): uncertain for the mentions before it in the clause.
TECHNICAL_HEDGE = (
    r"(?:may|might|could|can|likely|probably|possibly|presumably)\b[^.;]{0,50}?\b(?:technique|projection|positioning|"
    r"rotation|rotated|soft tissues?|overlap|overlapping|lung volumes|habitus|artifact|artefact|nipple|summation|"
    r"skin folds?|overlying|portable|ap view|supine|shadow|vessels|vascular shadows?|confluence)\b"
)

# Words that end the scope of a cue: a cue never reaches past them (they start a new clause).
CLAUSE_BREAKS = (
    r"but|however|although|though|whereas|while|which|except|aside from|apart from|other than|"
    r"with the exception of|given|since|because|after|following|in addition|additionally|where|as well as|"
    r"and there|with (?:a |an |the )?(?:new|persistent|stable|small|large|moderate|mild|minimal|trace|tiny|residual|slight)"
)

# After ", " or " and " or " with ", one of these starts a new noun phrase or clause, so the scope of a
# pre-negation ends ("no effusion, and moderate cardiomegaly").
NEW_PHRASE_STARTS = (
    r"there|the|a|an|this|these|which|mild|mildly|moderate|moderately|small|severe|trace|tiny|minimal|minimally|"
    r"stable|persistent|persisting|new|newly|increased|increasing|decreased|decreasing|worsened|worsening|improved|improving|"
    r"unchanged|residual|slight|slightly|marked|markedly|extensive|known|chronic|old|healed|healing|prominent|"
    r"enlarged|interval|again|redemonstrat\w*|continued|re-demonstrat\w*|bibasilar|is|are|was|were|has|have|remains?"
)

# Words allowed between a mention and a cue that follows it ("pleural effusion or pneumothorax is not
# seen", "the tube, previously seen, has been removed"); any other word means the cue has another subject.
POST_GAP_WORDS = frozenset(
    [
        "in",
        "at",
        "within",
        "mid",
        "base",
        "bases",
        "apex",
        "apices",
        "lingula",
        "lingular",
        "hemithorax",
        "zone",
        "zones",
        "region",
        "segment",
        "segments",
        "perihilar",
        "retrocardiac",
        "along",
        "near",
        "into",
        "over",
        "projecting",
        "posterior",
        "anterior",
        "medial",
        "superior",
        "inferior",
        "lateral",
        "lobar",
        "basilar",
        "bibasilar",
        "apical",
        "appear",
        "appears",
        "seem",
        "seems",
        "remain",
        "remains",
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
    r"persisting|measures?|measuring|projects?|terminates?|extends?"
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

SECTION_HEADERS_KEPT = (
    "findings",
    "impression",
    "impressions",
    "conclusion",
    "conclusions",
    "opinion",
    "final report",
    "report",
    "wet read",
    "addendum",
    "recommendation",
    "recommendations",
    "summary",
    "chest",
)
"""Section headers whose text is labeled; the header word itself is dropped."""
