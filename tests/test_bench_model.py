"""benchmarks/bench_model.py's MAC counting (the ratios of issue #22's targets are built on it)."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench_model import flop_counter


@pytest.mark.parametrize("groups, cin, cout", [(1, 8, 16), (8, 8, 8), (4, 8, 12)])
def test_conv_backward_counts_each_gradient_at_the_forward_cost(groups, cin, cout):
    """grad_input and grad_weight each cost the forward's MACs, for dense, depthwise and grouped
    convolutions (torch's own formula counts a depthwise weight gradient C times; equal to it for
    groups = 1). Forward: 2·N·C_out·H·W·(C_in/g)·k² FLOPs, by hand."""
    conv = torch.nn.Conv2d(cin, cout, 3, padding=1, groups=groups)
    x = torch.randn(2, cin, 10, 6, requires_grad=True)
    with FlopCounterMode(display=False) as fwd:
        y = conv(x)
    assert fwd.get_total_flops() == 2 * 2 * cout * 10 * 6 * (cin // groups) * 9
    with flop_counter() as bwd:
        y.sum().backward()
    assert bwd.get_total_flops() == 2 * fwd.get_total_flops()
    if groups == 1:
        with FlopCounterMode(display=False) as torch_bwd:
            conv(x).sum().backward()
        assert torch_bwd.get_total_flops() - fwd.get_total_flops() == bwd.get_total_flops()
