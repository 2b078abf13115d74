"""The built-in tasks: MultiMedBench's 14 (Med-PaLM M) and Med-Gemini's polygenic and 3D kinds.

Mixture weights are the Med-PaLM M shares in percent (they sum to 100); PubMedQA is
evaluation-only in the paper and the Med-Gemini kinds are not in its mixture, so they start at
0 — a user gives them weight explicitly. Instructions and framing follow the paper: the
instruction, a text-only one-shot exemplar whose image is the literal `<img>`, then the
example; classification is multiple choice over every class.
"""

from medmix.tasks.spec import Exemplar, TaskSpec

BUILTIN: list[TaskSpec] = []
"""Every built-in spec, in declaration order; `registry.py` registers them."""


def _builtin(spec: TaskSpec) -> TaskSpec:
    BUILTIN.append(spec)
    return spec

CXR_CONDITIONS = ("atelectasis", "cardiomegaly", "consolidation", "edema", "pleural effusion")
DERM_CLASSES = ("basal cell carcinoma", "squamous cell carcinoma", "actinic keratosis",
                "seborrheic keratosis", "melanoma", "nevus")
BIRADS = ("BI-RADS 1", "BI-RADS 2", "BI-RADS 3", "BI-RADS 4", "BI-RADS 5")
CBIS_CLASSES = ("benign without callback", "benign", "malignant")
GENOTYPES = ("homozygous reference", "heterozygous", "homozygous alternate")
YES_NO = ("yes", "no")

TEXT_MCQ_FIELDS = ()
DERM_FIELDS = (
    ("age", "Age"), ("gender", "Gender"), ("fitzpatrick", "Fitzpatrick skin type"),
    ("region", "Body region"), ("diameter_1", "Diameter 1 (mm)"), ("diameter_2", "Diameter 2 (mm)"),
    ("itch", "Itch"), ("grew", "Grew"), ("hurt", "Hurt"), ("changed", "Changed"),
    ("bleed", "Bleed"), ("elevation", "Elevation"), ("smoke", "Smoker"), ("drink", "Drinks alcohol"),
)

_builtin(TaskSpec(
    name="medqa", title="MedQA (USMLE)", modality="text", kind="mcq",
    instruction="The following are multiple choice questions about medical knowledge. "
                "Answer with the correct option.",
    question="", source="MedQA USMLE 4-option; paper 10,178 train / 1,273 test",
    exemplar=Exemplar({"question": "Which vitamin deficiency causes scurvy?",
                       "options": ["Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D"]}, "Vitamin C"),
    metrics=("accuracy",), mixture_weight=3.13,
))
_builtin(TaskSpec(
    name="medmcqa", title="MedMCQA", modality="text", kind="mcq",
    instruction="The following are multiple choice questions from medical entrance exams. "
                "Answer with the correct option.",
    question="", source="MedMCQA; paper 182,822 train / 4,183 test",
    exemplar=Exemplar({"question": "Which nerve supplies the deltoid muscle?",
                       "options": ["Radial nerve", "Axillary nerve", "Ulnar nerve", "Median nerve"]},
                      "Axillary nerve"),
    metrics=("accuracy",), mixture_weight=6.25,
))
_builtin(TaskSpec(
    name="pubmedqa", title="PubMedQA", modality="text", kind="qa",
    instruction="Answer the research question from the abstract with yes, no or maybe.",
    question="", context_fields=(("abstract", "Abstract"),), options=("yes", "no", "maybe"),
    source="PubMedQA (labelled); evaluation only in the paper, 500 test",
    exemplar=Exemplar({"abstract": "In a randomised trial of 200 adults, daily aspirin lowered "
                                   "the rate of recurrent stroke compared with placebo.",
                       "question": "Does daily aspirin reduce recurrent stroke?"}, "yes"),
    metrics=("accuracy",), mixture_weight=0.0,
))
_builtin(TaskSpec(
    name="mimic3_summary", title="MIMIC-III report summarization", modality="text", kind="summarize",
    instruction="You are a helpful radiology assistant. Summarize the radiology findings into "
                "an impression with minimal text.",
    question="Summarize the findings.", context_fields=(("findings", "Findings"),),
    source="MIMIC-III radiology reports, findings -> impression; paper 58,405 train / 13,057 test",
    exemplar=Exemplar({"findings": "The heart is normal in size. The lungs are clear. "
                                   "No pleural effusion or pneumothorax."},
                      "No acute cardiopulmonary process."),
    metrics=("rougeL", "bleu1", "bleu4"), mixture_weight=3.13,
))
for name, title, modality, phrase, weight, src in (
    ("vqa_rad", "VQA-RAD", "radiology", "the radiology image", 0.15, "VQA-RAD; paper 1,797 train / 451 test"),
    ("slake_vqa", "Slake-VQA", "radiology", "the radiology image", 2.64, "Slake-VQA (English); paper 9,849 train / 2,070 test"),
    ("path_vqa", "Path-VQA", "path", "the pathology image", 1.90, "Path-VQA; paper 19,755 train / 6,761 test"),
):
    _builtin(TaskSpec(
        name=name, title=title, modality=modality, kind="vqa",
        instruction="You are a helpful medical assistant. Answer the question about the image "
                    "with a short phrase.",
        question="What does the image show?", image_phrase=phrase,
        source=src,
        exemplar=Exemplar({"question": "Is there an abnormality on the left side?"}, "yes", num_images=1),
        metrics=("accuracy", "bleu1", "token_f1"), mixture_weight=weight,
    ))
_builtin(TaskSpec(
    name="cxr_report", title="MIMIC-CXR report generation", modality="cxr", kind="report",
    instruction="You are a helpful radiology assistant. Describe the findings in the chest X-ray: "
                "the heart size, any opacity with its side and size, and any pleural effusion.",
    question="Describe the findings in the image following the instructions.",
    image_phrase="the {view} view X-ray image", image_defaults={"view": "PA"},
    context_fields=(("indication", "Reason for the study"),),
    source="MIMIC-CXR findings sections; paper 353,542 train / 4,834 test",
    exemplar=Exemplar({"view": "PA", "indication": "cough"},
                      "The heart size is normal. The lungs are clear. No pleural effusion.",
                      num_images=1),
    metrics=("bleu1", "bleu4", "rougeL", "clinical_f1_micro", "clinical_f1_macro"), mixture_weight=59.90,
))
_builtin(TaskSpec(
    name="cxr_classify", title="MIMIC-CXR classification", modality="cxr", kind="classify",
    instruction="You are a helpful radiology assistant. Answer whether the chest X-ray shows "
                "the named condition.",
    question="Is {condition} present?", options=YES_NO,
    image_phrase="the {view} view X-ray image", image_defaults={"view": "PA"},
    source=f"MIMIC-CXR, binary per condition ({', '.join(CXR_CONDITIONS)}); same images as the report task",
    exemplar=Exemplar({"view": "PA", "condition": "pneumothorax"}, "no", num_images=1),
    augment=("crop",),
    metrics=("accuracy", "macro_f1", "macro_auc"), mixture_weight=11.98,
))
_builtin(TaskSpec(
    name="derm_pad", title="PAD-UFES-20 dermatology", modality="derm", kind="classify",
    instruction="You are a helpful dermatology assistant. Classify the skin lesion in the "
                "clinical photograph.",
    question="Which skin lesion is shown?", options=DERM_CLASSES, context_fields=DERM_FIELDS,
    image_phrase="the skin lesion image",
    source="PAD-UFES-20, 6 classes, 14 clinical attributes; paper 1,838 train / 460 test",
    exemplar=Exemplar({"age": 55, "gender": "female", "region": "face", "itch": "no",
                       "grew": "yes", "bleed": "no"}, "basal cell carcinoma", num_images=1),
    augment=("hflip", "vflip", "crop"),
    metrics=("accuracy", "macro_f1", "macro_auc"), mixture_weight=6.25,
))
_builtin(TaskSpec(
    name="mammo_vindr", title="VinDr-Mammo BI-RADS", modality="mammo", kind="classify",
    instruction="You are a helpful mammography assistant. Assign the BI-RADS category of the "
                "breast in the mammogram.",
    question="What is the BI-RADS category?", options=BIRADS,
    image_phrase="the {view} mammogram", image_defaults={"view": "CC"},
    context_fields=(("laterality", "Breast"),),
    source="VinDr-Mammo, 5 BI-RADS classes; paper 16,000 train / 4,000 test",
    exemplar=Exemplar({"view": "MLO", "laterality": "left"}, "BI-RADS 1", num_images=1),
    augment=("crop",),
    metrics=("accuracy", "macro_f1", "macro_auc"), mixture_weight=1.56,
))
for name, title, abn, weight in (
    ("mammo_cbis_mass", "CBIS-DDSM mass", "mass", 0.78),
    ("mammo_cbis_calc", "CBIS-DDSM calcification", "calcification", 0.78),
):
    _builtin(TaskSpec(
        name=name, title=title, modality="mammo", kind="classify",
        instruction=f"You are a helpful mammography assistant. Classify the {abn} abnormality "
                    f"in the mammogram patch.",
        question=f"What is the pathology of the {abn}?", options=CBIS_CLASSES,
        image_phrase=f"the {abn} patch image",
        source=f"CBIS-DDSM {abn}, 3 classes; paper ~1.3-1.5k train / ~0.35k test",
        exemplar=Exemplar({}, "benign", num_images=1),
        augment=("hflip", "vflip", "crop"),
        metrics=("accuracy", "macro_f1", "macro_auc"), mixture_weight=weight,
    ))
_builtin(TaskSpec(
    name="variant_calling", title="PrecisionFDA variant calling", modality="genomics", kind="variant",
    instruction="You are a helpful genomics assistant. Call the genotype of the candidate variant "
                "from the read pileup image.",
    question="What is the genotype of the candidate variant?", options=GENOTYPES,
    image_phrase="the read pileup image", context_fields=(("locus", "Candidate"),),
    source="PrecisionFDA Truth Challenge V2, DeepVariant-style pileups; paper 197,038 train / 13,030 test",
    exemplar=Exemplar({"locus": "chr1:1000 A>G"}, "heterozygous", num_images=1),
    metrics=("accuracy", "snp_f1", "indel_f1"), mixture_weight=1.56,
))
_builtin(TaskSpec(
    name="polygenic_risk", title="Polygenic risk (Med-Gemini)", modality="polygenic", kind="risk",
    instruction="You are a helpful genomics assistant. From the image of polygenic scores, "
                "answer whether the individual has the outcome.",
    question="Does the individual have {outcome}?", options=YES_NO,
    image_phrase="the polygenic score image", image_defaults={},
    source="Med-Gemini-Polygenic: PRS per trait and p-value threshold as 8x8 pixel blocks",
    exemplar=Exemplar({"outcome": "coronary artery disease"}, "no", num_images=1),
    metrics=("auc", "accuracy"), mixture_weight=0.0,
))
_builtin(TaskSpec(
    name="volume_report", title="3D volume report (Med-Gemini)", modality="volume", kind="report",
    instruction="You are a helpful radiology assistant. Describe the findings in the 3D scan "
                "given as a sequence of slices.",
    question="Describe the findings.", image_phrase="the {modality} volume slices",
    image_defaults={"modality": "CT"}, multi_image=True,
    source="Med-Gemini-3D: a volume as an ordered sequence of windowed slices",
    exemplar=Exemplar({"modality": "CT"}, "No focal lesion.", num_images=2),
    metrics=("bleu1", "bleu4", "rougeL"), mixture_weight=0.0,
))
