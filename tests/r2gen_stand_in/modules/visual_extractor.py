import torch
import torchvision.models as models
from torch import nn


class VisualExtractor(nn.Module):
    """As the official one: a torchvision model by name, without its pool and fc; a 7x7 grid of features."""

    def __init__(self, args):
        super().__init__()
        self.visual_extractor = args.visual_extractor
        self.pretrained = args.visual_extractor_pretrained
        network = getattr(models, self.visual_extractor)(pretrained=self.pretrained)
        self.model = nn.Sequential(*list(network.children())[:-2])
        self.avg_fnt = torch.nn.AvgPool2d(kernel_size=7, stride=1, padding=0)

    def forward(self, images):
        patch_feats = self.model(images)
        avg_feats = self.avg_fnt(patch_feats).squeeze().reshape(-1, patch_feats.size(1))
        batch_size, feat_size, _, _ = patch_feats.shape
        patch_feats = patch_feats.reshape(batch_size, feat_size, -1).permute(0, 2, 1)
        return patch_feats, avg_feats
