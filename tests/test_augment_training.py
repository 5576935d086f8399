"""EDM's non-leaking augmentation as a training setting (`training.<name>.augment: p`): the network it builds,
the loss hook, p = 0 against no augmentation, the model file, and samples drawn with the label zeroed."""
import json

import numpy as np
import pytest
import torch

from diffrepro.augment import EDM_CIFAR10, NonLeakingAugment, training_hook
from diffrepro.loss import DenoisingLoss
from diffrepro.models import AUGMENT_DIM, build_denoiser, network_config
from diffrepro.nets.unet import SongUNet
from diffrepro.sigma_dist import LogNormal

TINY = {"name": "t", "network": "tiny", "steps": 4, "batch_size": 4, "lr": 1e-3}


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def recorded(monkeypatch):
    """Every call of the raw U-Net, recorded: (input, augment_labels)."""
    calls = []
    forward = SongUNet.forward

    def recording(self, x, noise_labels, class_labels=None, augment_labels=None):
        calls.append((x.detach().clone(), None if augment_labels is None else augment_labels.detach().clone()))
        return forward(self, x, noise_labels, class_labels, augment_labels)

    monkeypatch.setattr(SongUNet, "forward", recording)
    return calls


def test_the_augment_key_builds_a_conditioned_network_and_the_loss_hook():
    assert AUGMENT_DIM == EDM_CIFAR10.label_dim == 9
    on = {**TINY, "augment": 0.12}
    assert network_config(on, (3, 8, 8))["augment_dim"] == 9
    hook = training_hook(on)
    assert isinstance(hook, NonLeakingAugment) and hook.p == 0.12 and hook.pipe == EDM_CIFAR10
    for off in (TINY, {**TINY, "augment": 0}):        # off, as in EDM: no augmentation input, no hook
        assert "augment_dim" not in network_config(off, (3, 8, 8)) and training_hook(off) is None
    with pytest.raises(ValueError, match="augment: 0.12 needs image data"):
        network_config({**on, "network": "mlp-small"}, (2,))


def test_p_zero_trains_on_the_unaugmented_batch(recorded):
    """With p = 0 the network sees exactly the batch, with a zero label, and the loss is the one without
    augmentation (same noise draws, same network)."""
    torch.manual_seed(0)
    D = build_denoiser(network_config({**TINY, "augment": 0.5}, (3, 8, 8)), "edm")
    torch.nn.init.normal_(D.net.map_augment.weight)      # a label that is not zero would change the output
    y = torch.rand(5, 3, 8, 8, generator=gen(1)) * 2 - 1
    plain = DenoisingLoss(LogNormal())(D, y, gen(7))
    zero = DenoisingLoss(LogNormal(), augment_fn=NonLeakingAugment(0.0))(D, y, gen(7))
    assert torch.equal(plain.loss, zero.loss) and torch.equal(plain.sigma, zero.sigma)
    (x_plain, lab_plain), (x_zero, lab_zero) = recorded
    assert torch.equal(x_plain, x_zero)
    assert torch.equal(lab_zero, torch.zeros(5, 9)) and torch.equal(lab_plain, torch.zeros(5, 9))
    some = DenoisingLoss(LogNormal(), augment_fn=NonLeakingAugment(1.0))(D, y, gen(7))
    assert not torch.equal(some.loss, plain.loss) and recorded[-1][1].abs().sum() > 0


def test_a_given_label_conditions_and_no_label_means_zero():
    torch.manual_seed(0)
    D = build_denoiser(network_config({**TINY, "augment": 0.12}, (3, 8, 8)), "edm").eval()
    torch.nn.init.normal_(D.net.map_augment.weight)
    x, sigma = torch.randn(3, 3, 8, 8, generator=gen(2)), torch.tensor([0.3, 1.0, 5.0])
    with torch.no_grad():
        none, zero = D(x, sigma), D(x, sigma, augment_labels=torch.zeros(3, 9))
        flipped = D(x, sigma, augment_labels=torch.eye(9)[:3])
    assert torch.equal(none, zero) and not torch.equal(none, flipped)


def _dataset(tmp_path, n=24, size=8):
    from stages import prepare

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "imgs.npz", images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    spec = {"format": 1, "stage": "prepare", "dataset": {"entry": "mine", "kind": "image", "format": "array",
                                                         "resolution": size, "n_heldout": 4, "seed": 0, "n_train": 16}}
    (tmp_path / "prepare.json").write_text(json.dumps(spec))
    prepare.main(["--spec", str(tmp_path / "prepare.json"), "--out", str(tmp_path / "data"),
                  "--source", str(tmp_path / "imgs.npz")])
    return tmp_path / "data"


def test_the_stages_train_augmented_record_it_and_sample_with_the_label_zeroed(tmp_path, recorded, one_thread):
    from diffrepro.models import load_model
    from stages import sample, train

    data = _dataset(tmp_path)
    spec = {"format": 1, "stage": "train", "run": "aug", "seed": 0, "method": {"name": "edm", "precond": "edm"},
            "training": {**TINY, "checkpoint_every": 4, "log_every": 2, "augment": 1.0}}
    (tmp_path / "train.json").write_text(json.dumps(spec))
    train.main(["--spec", str(tmp_path / "train.json"), "--data", str(data), "--out", str(tmp_path / "run"),
                "--device", "cpu"])
    seen_in_training = [lab for _, lab in recorded]
    assert len(seen_in_training) == 4 and all(lab is not None and lab.shape == (4, 9) for lab in seen_in_training)
    assert all((lab[:, 0] != 0).any() for lab in seen_in_training)    # at p = 1 the x-flip is a coin per image

    D, rec = load_model(tmp_path / "run/model.pt")                     # the model file rebuilds the network
    assert rec["network"]["augment_dim"] == 9 and D.augment_dim == 9
    assert rec["augment"] == {"p": 1.0, "pipe": EDM_CIFAR10.to_dict()}
    snap, _ = load_model(tmp_path / "run" / rec["snapshots"][0])
    assert snap.augment_dim == 9

    recorded.clear()
    (tmp_path / "sample.json").write_text(json.dumps({"format": 1, "stage": "sample", "eval": "aug__heun-3",
                                                      "sampling": {"sampler": "heun", "num_steps": 3},
                                                      "num_samples": 6, "batch_size": 4}))
    sample.main(["--spec", str(tmp_path / "sample.json"), "--model", str(tmp_path / "run/model.pt"),
                 "--out", str(tmp_path / "eval"), "--device", "cpu"])
    assert len(recorded) == 2 * (2 * 3 - 1)                             # 2 batches x 5 NFE
    assert all(torch.equal(lab, torch.zeros(4, 9)) for _, lab in recorded)
    assert np.load(tmp_path / "eval/samples.npy").shape == (6, 8, 8, 3)
