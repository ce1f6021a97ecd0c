import pytest
import torch

from runner.schedule import class_weights, peak_weight

C = 3


def gammas(A, T, steps, **kw):
    A_t = torch.tensor([float(A)], dtype=torch.float64)
    T_t = torch.tensor([float(T)], dtype=torch.float64)
    return class_weights(torch.arange(steps), C, A_t, T_t, **kw)[:, 0]  # [K, C]


@pytest.mark.parametrize("shape", ["triangle", "sine"])
def test_weights_sum_to_C_and_stay_positive(shape):
    g = gammas(70, 50, 1000, shape=shape)
    assert torch.allclose(g.sum(1), torch.full((1000,), float(C), dtype=torch.float64), atol=1e-12)
    assert (g > 0).all()


def test_emphasised_class_cycles_with_the_period():
    T = 40
    g = gammas(10, T, 3 * C * T)
    for t in range(0, 3 * C * T, 7):
        if t % T == 0:
            continue  # at a window boundary every weight is 1
        assert int(g[t].argmax()) == (t // T) % C, t
    # the full cycle repeats after C * T steps
    assert torch.equal(g[: C * T], g[C * T : 2 * C * T])


def test_peak_and_trough_values():
    A, T = 70.0, 100
    g = gammas(A, T, T)
    assert g[T // 2, 0].item() == pytest.approx(C * A / (A + C - 1), rel=1e-12)
    assert g[T // 2, 0].item() == pytest.approx(peak_weight(A, C))
    assert g[T // 2, 1].item() == pytest.approx(C / (A + C - 1), rel=1e-12)
    assert peak_weight(70, 3) == pytest.approx(2.9166666, rel=1e-6)  # METHOD.md: "about 2.92"
    assert torch.allclose(g[0], torch.ones(C, dtype=torch.float64))


def test_triangle_rises_linearly():
    A, T = 5.0, 10
    g = gammas(A, T, T, normalize=False)
    expected = [1 + (A - 1) * (1 - abs(1 - 2 * tau / T)) for tau in range(T)]
    assert torch.allclose(g[:, 0], torch.tensor(expected, dtype=torch.float64))
    assert torch.equal(g[:, 1], torch.ones(T, dtype=torch.float64))


def test_A_equal_one_gives_all_ones():
    g = gammas(1, 13, 500, shape="sine")
    assert torch.equal(g, torch.ones_like(g))


def test_phase_and_static_from():
    T = 20
    g = gammas(9, T, 4 * T, phase=0.5)
    assert g[0, 0].item() == pytest.approx(peak_weight(9, C))  # starts mid-window
    sf = torch.tensor([2.0 * T], dtype=torch.float64)
    g2 = class_weights(
        torch.arange(4 * T), C, torch.tensor([9.0], dtype=torch.float64), torch.tensor([float(T)], dtype=torch.float64), static_from=sf
    )[:, 0]
    assert torch.equal(g2[2 * T :], torch.ones_like(g2[2 * T :]))
    assert g2[T + T // 2, 1].item() == pytest.approx(peak_weight(9, C))


def test_runs_in_a_stack_get_their_own_A_and_T():
    A = torch.tensor([1.0, 70.0, 10.0], dtype=torch.float64)
    T = torch.tensor([10.0, 100.0, 7.0], dtype=torch.float64)
    g = class_weights(torch.arange(300), C, A, T)
    for m in range(3):
        alone = class_weights(torch.arange(300), C, A[m : m + 1], T[m : m + 1])[:, 0]
        assert torch.equal(g[:, m], alone)
