"""Training on CPU: it learns (against the ideal denoiser's loss), is bit-reproducible, resumes
exactly, and stops cleanly on a NaN loss."""
import pytest
import torch

from diffrepro.ideal import IdealDenoiser
from diffrepro.loss import DenoisingLoss
from diffrepro.nets import build_network
from diffrepro.precond import EDMPrecond
from diffrepro.samplers import generate
from diffrepro.sigma_dist import LogNormal
from diffrepro.toy2d import make_toy
from diffrepro.training import Trainer, TrainConfig, TrainingDiverged


def _eval_loss(D, data, n=8000, seed=123):
    g = torch.Generator().manual_seed(seed)
    y = data[torch.randint(0, len(data), (n,), generator=g)].double()
    sigma = LogNormal().sample(n, g).double()
    noise = torch.randn(y.shape, generator=g, dtype=torch.float64)
    weight = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2          # EDM's lambda(sigma)
    with torch.no_grad():
        D_x = D(y + noise * sigma[:, None], sigma).double()
    return (weight[:, None] * (D_x - y) ** 2).sum(1).mean().item()


def _trainer(data, preset, steps, ckpt_dir=None, seed=0, **kw):
    torch.manual_seed(seed)  # the initial weights depend on the seed only
    net = build_network(preset, channels=data.shape[1], img_resolution=data.shape[-1], **kw.pop("net", {}))
    cfg = TrainConfig(steps=steps, batch_size=kw.pop("batch_size", 256), lr=kw.pop("lr", 3e-3),
                      ema_halflife_img=kw.pop("ema", 20_000), checkpoint_every=kw.pop("ckpt", 100),
                      log_every=kw.pop("log", 50), seed=seed, **kw)
    return Trainer(EDMPrecond(net), DenoisingLoss(LogNormal()), data, cfg, ckpt_dir=ckpt_dir, progress=False)


@pytest.mark.integration
def test_mlp_learns_gaussian_mixture():
    data = torch.from_numpy(make_toy("gmm", 2000, seed=0))
    tr = _trainer(data, "mlp-small", steps=600)
    start = _eval_loss(tr.denoiser, data)
    tr.run()
    ideal = _eval_loss(IdealDenoiser(data.double()), data)
    end = _eval_loss(EDMPrecond(tr.denoiser.net), data)
    print(f"eval loss: start {start:.4f} end {end:.4f} ideal {ideal:.4f}")
    # the gap to the ideal denoiser's loss shrinks by more than half
    assert end - ideal < 0.5 * (start - ideal), (start, end, ideal)
    res = generate(tr.ema.model, (2,), list(range(4000)), num_steps=32)
    x = res.samples.float()
    assert torch.allclose(x.mean(0), data.mean(0), atol=0.05), x.mean(0)
    assert torch.allclose(torch.cov(x.T), torch.cov(data.T), atol=0.04), torch.cov(x.T)
    # samples sit on the ring of modes (radius 0.7) rather than filling the disk
    r = x.norm(dim=1)
    assert (r - 0.7).abs().median().item() < 0.1


def test_same_seed_gives_bit_identical_weights():
    data = torch.rand(64, 1, 8, 8) * 2 - 1
    finals = []
    for _ in range(2):
        tr = _trainer(data, "tiny", net=dict(dropout=0.1), steps=6, batch_size=16, ckpt=3, log=3)
        tr.run()
        finals.append([p.detach().clone() for p in tr.ema.model.parameters()] +
                      [p.detach().clone() for p in tr.denoiser.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*finals))


def test_batches_walk_seeded_epoch_permutations():
    """Step k's batch is slice k of the concatenated per-epoch permutations, also when a batch spans
    epochs or is larger than the data set (a few images, a large batch)."""
    from diffrepro.seeding import generator
    data = torch.rand(10, 2)
    for batch in (4, 10, 25):
        tr = _trainer(data, "mlp-small", steps=1, batch_size=batch, seed=3)
        stream = torch.cat([torch.randperm(10, generator=generator("cpu", 3, "epoch", e)) for e in range(30)])
        for k in list(range(9)) + [3, 0]:                 # also revisiting steps (resume)
            assert torch.equal(tr._batch_indices(k), stream[k * batch:(k + 1) * batch]), (batch, k)
        assert not torch.equal(stream[:10], stream[10:20])  # the epochs are shuffled differently


def test_fast_training_follows_the_plain_network(monkeypatch, one_thread):
    """`fast: true` swaps the speed paths into the trainer's network (compilation left out here: its own tests
    run on a GPU, tests/test_gpu.py). They change kernels, not math: the same run (no dropout, whose masks
    follow memory order) gives the same losses to float32 rounding, and weights that differ by a tiny fraction
    of how far training moved them (Adam's first steps are sign-like, so single weights with near-zero
    gradients may differ by up to one step); the checkpoint keys are the plain network's."""
    import diffrepro.training as training
    compiled = []
    monkeypatch.setattr(training, "compile_model", lambda m, mode=None: compiled.append(mode) or m)
    data = torch.rand(64, 3, 8, 8) * 2 - 1
    runs = []
    for fast in (False, True):
        tr = _trainer(data, "tiny", steps=5, batch_size=16, ckpt=5, log=1, fast=fast,
                      compile_mode="reduce-overhead" if fast else None)
        start = torch.cat([p.detach().flatten() for p in tr.denoiser.parameters()])
        loss = [tr.step().item() for _ in range(5)]
        runs.append((loss, start, torch.cat([p.detach().flatten() for p in tr.denoiser.parameters()]), tr))
    (loss, start, end, plain), (loss_f, start_f, end_f, tr) = runs
    assert compiled == ["reduce-overhead"]
    assert type(tr.denoiser.net).__name__ == "FastSongUNet" and type(plain.denoiser.net).__name__ == "SongUNet"
    assert list(tr.state_dict()["net"]) == list(plain.state_dict()["net"])
    assert list(tr.ema.state_dict()) == list(plain.ema.state_dict())
    assert torch.equal(start, start_f)
    assert loss_f == pytest.approx(loss, rel=1e-4)
    moved = (end - start).norm()
    assert (end_f - end).norm() < 1e-3 * moved, ((end_f - end).norm(), moved)


def test_resume_equals_uninterrupted(tmp_path):
    data = torch.from_numpy(make_toy("ring", 300, seed=0))
    full = _trainer(data, "mlp-tiny", steps=40, batch_size=64, ckpt=20, log=10)
    full.run()
    part = _trainer(data, "mlp-tiny", steps=20, batch_size=64, ckpt=20, log=10,
                    ckpt_dir=tmp_path)
    part.run()
    resumed = _trainer(data, "mlp-tiny", steps=40, batch_size=64, ckpt=20, log=10,
                       ckpt_dir=tmp_path, seed=0)
    torch.manual_seed(999)  # a different global RNG state must not matter
    assert resumed.try_resume() and resumed.state.step == 20
    resumed.run()
    for a, b in zip(full.denoiser.parameters(), resumed.denoiser.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(full.ema.model.parameters(), resumed.ema.model.parameters()):
        assert torch.equal(a, b)
    assert [r for r in full.state.metrics if r["metric"] == "train_loss"] == \
        [r for r in resumed.state.metrics if r["metric"] == "train_loss"]
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["step-00000020.pt", "step-00000040.pt"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = torch.from_numpy(make_toy("ring", 300, seed=0))
    tr = _trainer(data, "mlp-tiny", steps=40, batch_size=32, ckpt=10, log=10,
                  ckpt_dir=tmp_path)
    original_step = tr.step

    def poisoned_step():
        if tr.state.step == 25:
            tr.data[:] = float("nan")
        return original_step()

    tr.step = poisoned_step
    with pytest.raises(TrainingDiverged, match="loss became nan.*last good checkpoint \\(step 20\\)"):
        tr.run()
    sd = torch.load(tmp_path / "resume.pt", weights_only=False)
    assert sd["step"] == 20
    assert all(torch.isfinite(v).all() for v in sd["net"].values())
