"""Network presets by name (kept free of torch so that planning the workflow stays fast)."""

# U-Net presets, smallest to EDM's CIFAR-10 DDPM++ (about 56M parameters at 32x32x3).
UNET_PRESETS = {
    "tiny": dict(model_channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,), dropout=0.0),
    "small": dict(model_channels=32, channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=(8,), dropout=0.1),
    "medium": dict(model_channels=64, channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=(16,), dropout=0.1),
    "ddpmpp-cifar": dict(model_channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), dropout=0.13),
}
MLP_PRESETS = {
    "mlp-tiny": dict(width=64, depth=3),
    "mlp-small": dict(width=128, depth=3),
    "mlp-large": dict(width=512, depth=4),
}
