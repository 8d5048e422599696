"""The multi-stage large-batch step equals a plain backward (float64, 1e-5); its memory follows the chunk
size."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from pairloss.losses import ContrastiveLoss, RecallAtKSurrogateLoss
from pairloss.training.large_batch import large_batch_backward, large_batch_step


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one thread avoids waiting on a second, busy core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(kind: str) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(6, 16)]
    if kind in ("batchnorm", "both"):
        layers.append(nn.BatchNorm1d(16))
    layers.append(nn.ReLU())
    if kind in ("dropout", "both"):
        layers.append(nn.Dropout(0.3))
    layers.append(nn.Linear(16, 4))
    return nn.Sequential(*layers).double()


def grads(model: nn.Module) -> list[Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def data(n: int = 48) -> tuple[Tensor, Tensor]:
    return torch.randn(n, 6, dtype=torch.float64), torch.arange(n) % 6


LOSSES = [RecallAtKSurrogateLoss(k=(1, 2, 4), tau2=0.1), ContrastiveLoss()]


@pytest.mark.parametrize("loss_fn", LOSSES, ids=["rsk", "contrastive"])
@pytest.mark.parametrize("chunk_size", [5, 16, 48])
def test_equals_plain_backward_on_the_whole_batch(loss_fn, chunk_size: int) -> None:
    x, y = data()
    model = make_model("plain")
    reference = copy.deepcopy(model)
    loss_fn(reference(x), y).backward()
    result = large_batch_backward(model, x, y, loss_fn, chunk_size=chunk_size)
    for got, want in zip(grads(model), grads(reference), strict=True):
        assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert result.loss == pytest.approx(float(loss_fn(reference(x), y).detach()), abs=1e-10)
    assert result.embeddings.shape == (48, 4) and not result.embeddings.requires_grad


def test_dropout_replays_the_rng_of_each_chunk() -> None:
    x, y = data()
    loss_fn = LOSSES[0]
    model = make_model("dropout")
    reference = copy.deepcopy(model)
    torch.manual_seed(7)
    plain = torch.cat([reference(c) for c in x.split(10)])
    loss_fn(plain, y).backward()
    after_plain = torch.rand(1)
    torch.manual_seed(7)
    large_batch_backward(model, x, y, loss_fn, chunk_size=10)
    assert torch.equal(torch.rand(1), after_plain)  # the global RNG moves as if the batch were embedded once
    for got, want in zip(grads(model), grads(reference), strict=True):
        assert torch.allclose(got, want, atol=1e-5, rtol=0)
    # A different RNG stream draws other masks, so the match above is not trivial.
    control = copy.deepcopy(reference)
    control.zero_grad()
    torch.manual_seed(8)
    loss_fn(torch.cat([control(c) for c in x.split(10)]), y).backward()
    assert not all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads(control), grads(model), strict=True))


def test_frozen_batch_norm_equals_plain_eval_mode_step() -> None:
    x, y = data()
    loss_fn = LOSSES[0]
    model = make_model("both")
    with torch.no_grad():  # non-trivial running statistics
        model(torch.randn(64, 6, dtype=torch.float64) * 2 + 1)
    reference = copy.deepcopy(model)
    running = model[1].running_mean.clone()
    norm = reference[1]
    norm.eval()
    torch.manual_seed(3)
    loss_fn(torch.cat([reference(c) for c in x.split(12)]), y).backward()
    torch.manual_seed(3)
    large_batch_backward(model, x, y, loss_fn, chunk_size=12, batch_norm="frozen")
    assert model[1].training  # the mode is restored
    assert torch.equal(model[1].running_mean, running)  # frozen: no update
    for got, want in zip(grads(model), grads(reference), strict=True):
        assert torch.allclose(got, want, atol=1e-5, rtol=0)


def test_chunk_batch_norm_equals_plain_chunked_step_and_updates_once() -> None:
    x, y = data()
    loss_fn = LOSSES[1]
    model = make_model("batchnorm")
    reference = copy.deepcopy(model)
    loss_fn(torch.cat([reference(c) for c in x.split(16)]), y).backward()
    large_batch_backward(model, x, y, loss_fn, chunk_size=16, batch_norm="chunk")
    for got, want in zip(grads(model), grads(reference), strict=True):
        assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert torch.allclose(model[1].running_mean, reference[1].running_mean, atol=1e-12)
    assert model[1].num_batches_tracked.item() == reference[1].num_batches_tracked.item() == 3


def test_loss_parameters_get_their_gradient_and_step_updates() -> None:
    x, y = data(24)
    proxies = nn.Parameter(torch.randn(6, 4, dtype=torch.float64))

    def proxy_loss(embeddings: Tensor, labels: Tensor) -> Tensor:
        return nn.functional.cross_entropy(embeddings @ proxies.T, labels)

    model = make_model("plain")
    reference = copy.deepcopy(model)
    proxy_loss(reference(x), y).backward()
    want = proxies.grad.clone()
    proxies.grad = None
    optimizer = torch.optim.SGD([*model.parameters(), proxies], lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    large_batch_step(model, optimizer, x, y, proxy_loss, chunk_size=7)
    assert torch.allclose(proxies.grad, want, atol=1e-10)
    for p, b, g in zip(model.parameters(), before, grads(reference), strict=True):
        assert torch.allclose(p.detach(), b - 0.1 * g, atol=1e-10)


class SavedBytes:
    """Peak bytes of tensors saved for backward while they are alive (a deterministic memory measure)."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0

    def pack(self, tensor: Tensor) -> object:
        counter = self

        class Holder:
            def __init__(self) -> None:
                self.tensor = tensor
                self.size = tensor.numel() * tensor.element_size()
                counter.live += self.size
                counter.peak = max(counter.peak, counter.live)

            def __del__(self) -> None:
                counter.live -= self.size

        return Holder()

    @staticmethod
    def unpack(holder: object) -> Tensor:
        return holder.tensor  # type: ignore[attr-defined]


class Measured(nn.Module):
    """Wraps a model so that only its own activations are counted."""

    def __init__(self, inner: nn.Module, meter: SavedBytes) -> None:
        super().__init__()
        self.inner = inner
        self.meter = meter

    def forward(self, x: Tensor) -> Tensor:
        with torch.autograd.graph.saved_tensors_hooks(self.meter.pack, self.meter.unpack):
            return self.inner(x)


def test_activation_memory_grows_with_chunk_not_with_batch() -> None:
    wide = nn.Sequential(nn.Linear(6, 256), nn.ReLU(), nn.Linear(256, 8)).double()

    def loss_fn(embeddings: Tensor, labels: Tensor) -> Tensor:  # any loss: the model's memory is measured
        return (embeddings**2).sum()

    def peak(n: int, chunk: int | None) -> int:
        meter = SavedBytes()
        model = Measured(wide, meter)
        x, y = data(n)
        if chunk is None:
            loss_fn(model(x), y).backward()
        else:
            large_batch_backward(model, x, y, loss_fn, chunk_size=chunk)
        return meter.peak

    small = peak(128, 16)
    assert small == peak(512, 16)  # independent of the batch size
    assert peak(128, 64) - peak(128, 32) == 2 * (peak(128, 32) - small)  # linear in the chunk size
    assert peak(512, None) > 8 * small  # a plain step holds the activations of the whole batch


def test_mixed_precision_runs_and_is_close() -> None:
    x, y = data()
    model = make_model("plain").float()
    reference = copy.deepcopy(model)
    loss_fn = LOSSES[1]
    loss_fn(reference(x.float()), y).backward()
    result = large_batch_backward(model, x.float(), y, loss_fn, chunk_size=16, amp_dtype=torch.bfloat16)
    assert result.embeddings.dtype == torch.float32
    for got, want in zip(grads(model), grads(reference), strict=True):
        assert torch.isfinite(got).all()
        assert torch.allclose(got, want, atol=0.05 * float(want.abs().max()) + 1e-3)


def test_invalid_arguments() -> None:
    x, y = data(8)
    model = make_model("plain")
    with pytest.raises(ValueError, match="chunk_size"):
        large_batch_backward(model, x, y, LOSSES[1], chunk_size=0)
    with pytest.raises(ValueError, match="batch_norm"):
        large_batch_backward(model, x, y, LOSSES[1], batch_norm="sync")
    with pytest.raises(ValueError, match="entries"):
        large_batch_backward(model, x, y[:5], LOSSES[1])
    with pytest.raises(ValueError, match="empty"):
        large_batch_backward(model, x[:0], y[:0], LOSSES[1])
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        large_batch_backward(model, x.tolist(), y, LOSSES[1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN or infinite"):
        large_batch_backward(model, torch.full_like(x, float("nan")), y, LOSSES[1])
