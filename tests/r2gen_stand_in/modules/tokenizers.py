import json
import re
from collections import Counter


def _sent_cleaner(t):
    # The official regex, quirk included: ":-\[" is a character range.
    return re.sub(
        "[.,?;*!%^&_+():-\\[\\]{}]",
        "",
        t.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower(),
    )


class Tokenizer:
    def __init__(self, args):
        self.ann_path = args.ann_path
        self.threshold = args.threshold
        self.dataset_name = args.dataset_name
        if self.dataset_name == "iu_xray":
            self.clean_report = self.clean_report_iu_xray
        else:
            self.clean_report = self.clean_report_mimic_cxr
        with open(self.ann_path) as f:
            self.ann = json.loads(f.read())
        self.token2idx, self.idx2token = self.create_vocabulary()

    def create_vocabulary(self):
        total_tokens = []
        for example in self.ann["train"]:
            total_tokens.extend(self.clean_report(example["report"]).split())
        counter = Counter(total_tokens)
        vocab = [k for k, v in counter.items() if v >= self.threshold] + ["<unk>"]
        vocab.sort()
        token2idx, idx2token = {}, {}
        for idx, token in enumerate(vocab):
            token2idx[token] = idx + 1
            idx2token[idx + 1] = token
        return token2idx, idx2token

    def clean_report_iu_xray(self, report):
        def report_cleaner(t):
            return (
                t.replace("..", ".")
                .replace("..", ".")
                .replace("..", ".")
                .replace("1. ", "")
                .replace(". 2. ", ". ")
                .replace(". 3. ", ". ")
                .replace(". 4. ", ". ")
                .replace(". 5. ", ". ")
                .replace(" 2. ", ". ")
                .replace(" 3. ", ". ")
                .replace(" 4. ", ". ")
                .replace(" 5. ", ". ")
                .strip()
                .lower()
                .split(". ")
            )

        tokens = [_sent_cleaner(sent) for sent in report_cleaner(report) if _sent_cleaner(sent) != []]
        return " . ".join(tokens) + " ."

    def clean_report_mimic_cxr(self, report):
        def report_cleaner(t):
            t = t.replace("\n", " ")
            for _ in range(7):
                t = t.replace("__", "_")
            for _ in range(6):
                t = t.replace("  ", " ")
            for _ in range(8):
                t = t.replace("..", ".")
            return (
                t.replace("1. ", "")
                .replace(". 2. ", ". ")
                .replace(". 3. ", ". ")
                .replace(". 4. ", ". ")
                .replace(". 5. ", ". ")
                .replace(" 2. ", ". ")
                .replace(" 3. ", ". ")
                .replace(" 4. ", ". ")
                .replace(" 5. ", ". ")
                .strip()
                .lower()
                .split(". ")
            )

        tokens = [_sent_cleaner(sent) for sent in report_cleaner(report) if _sent_cleaner(sent) != []]
        return " . ".join(tokens) + " ."

    def get_token_by_id(self, id):
        return self.idx2token[id]

    def get_id_by_token(self, token):
        if token not in self.token2idx:
            return self.token2idx["<unk>"]
        return self.token2idx[token]

    def get_vocab_size(self):
        return len(self.token2idx)

    def __call__(self, report):
        ids = [self.get_id_by_token(t) for t in self.clean_report(report).split()]
        return [0, *ids, 0]

    def decode(self, ids):
        txt = ""
        for i, idx in enumerate(ids):
            if idx > 0:
                if i >= 1:
                    txt += " "
                txt += self.idx2token[idx]
            else:
                break
        return txt

    def decode_batch(self, ids_batch):
        return [self.decode(ids) for ids in ids_batch]
