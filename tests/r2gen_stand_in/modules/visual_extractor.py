from torch import nn


class VisualExtractor(nn.Module):
    """Stand-in for the ResNet-101 extractor: (B, 3, 224, 224) -> patch_feats (B, 49, d_vf), avg (B, d_vf)."""

    def __init__(self, args):
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, args.d_vf, kernel_size=32, stride=32), nn.ReLU())
        self.avg_fnt = nn.AvgPool2d(kernel_size=7, stride=1, padding=0)

    def forward(self, images):
        patch_feats = self.model(images)
        avg_feats = self.avg_fnt(patch_feats).squeeze().reshape(-1, patch_feats.size(1))
        batch_size, feat_size, _, _ = patch_feats.shape
        patch_feats = patch_feats.reshape(batch_size, feat_size, -1).permute(0, 2, 1)
        return patch_feats, avg_feats
