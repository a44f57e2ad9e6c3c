import torch
from modules.base_cmn import BaseCMN
from modules.visual_extractor import VisualExtractor
from torch import nn


class BaseCMNModel(nn.Module):
    def __init__(self, args, tokenizer):
        super().__init__()
        self.args = args
        self.tokenizer = tokenizer
        self.visual_extractor = VisualExtractor(args)
        self.encoder_decoder = BaseCMN(args, tokenizer)
        if args.dataset_name == "iu_xray":
            self.forward = self.forward_iu_xray
        else:
            self.forward = self.forward_mimic_cxr

    def forward_iu_xray(self, images, targets=None, mode="train", update_opts={}):  # noqa: B006 (official)
        att_feats_0, fc_feats_0 = self.visual_extractor(images[:, 0])
        att_feats_1, fc_feats_1 = self.visual_extractor(images[:, 1])
        fc_feats = torch.cat((fc_feats_0, fc_feats_1), dim=1)
        att_feats = torch.cat((att_feats_0, att_feats_1), dim=1)
        if mode == "sample":
            return self.encoder_decoder(fc_feats, att_feats, mode="sample", update_opts=update_opts)
        raise ValueError(mode)

    def forward_mimic_cxr(self, images, targets=None, mode="train", update_opts={}):  # noqa: B006 (official)
        att_feats, fc_feats = self.visual_extractor(images)
        if mode == "sample":
            return self.encoder_decoder(fc_feats, att_feats, mode="sample", update_opts=update_opts)
        raise ValueError(mode)
