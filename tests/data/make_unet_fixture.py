"""Writes unet_tiny_129ecb4.pt: a `tiny` U-Net's state dict (3 channels, 16x16, 10 classes; weights moved
off their zero initialisation, stored as float16 values), an input, and the network's float32 output as
computed by the network of commit 129ecb4 (the last one before the network was rewritten to read like
EDM's SongUNet). tests/test_networks.py loads the state dict into today's network and expects the same
output: existing checkpoints keep their keys and their function.

    git worktree add /tmp/old 129ecb4 && PYTHONPATH=/tmp/old python tests/data/make_unet_fixture.py
"""
from pathlib import Path

import torch

from diffrepro.nets import build_network

torch.manual_seed(0)
net = build_network("tiny", channels=3, img_resolution=16, label_dim=10)
with torch.no_grad():
    for p in net.parameters():
        p.add_(0.05 * torch.randn_like(p))
state = {k: v.half() for k, v in net.state_dict().items()}
net.load_state_dict({k: v.float() for k, v in state.items()})
x, sigma, labels = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 1.7]), torch.eye(10)[[2, 7]]
with torch.no_grad():
    y = net.eval()(x, sigma, labels)
torch.save({"state_dict": state, "x": x, "noise_labels": sigma, "class_labels": labels, "output": y},
           Path(__file__).with_name("unet_tiny_129ecb4.pt"))
