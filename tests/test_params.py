"""Tests of the fast/slow parameter partition and activity masks (metarim.meta.partition)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from metarim.meta.partition import DEFAULT_FAST_TYPES, partition_parameters, reduce_activity
from metarim.rim import RIM, GroupGRUCell, GroupLinear, GroupLSTMCell

MECHANISMS = tuple(f"rim.cell.mechanisms.{n}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


class Policy(nn.Module):
    def __init__(self, cell: str = "lstm", num_units: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(5, 6)
        self.rim = RIM(6, 3 * num_units, num_units=num_units, k=2, cell=cell,
                       input_key_size=4, input_value_size=5, comm_key_size=3, comm_value_size=3)
        self.head = nn.Linear(3 * num_units, 2)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_default_fast_set_is_the_mechanisms(cell):
    policy = Policy(cell)
    part = partition_parameters(policy)
    assert part.fast == MECHANISMS
    assert set(part.fast) | set(part.slow) == {n for n, _ in policy.named_parameters()}
    assert not set(part.fast) & set(part.slow)
    assert part.num_units == 4 and all(part.axes[n] == 0 for n in part.fast)
    # the attentions use GroupLinear (they have a module axis) but are slow by role
    assert any(n.startswith("rim.cell.comm_attention.") for n in part.slow)
    assert any(n.startswith("rim.cell.input_attention.query") for n in part.slow)
    assert {"encoder.weight", "head.bias"} <= set(part.slow)
    assert DEFAULT_FAST_TYPES == (GroupLSTMCell, GroupGRUCell)


def test_other_fast_specs():
    policy = Policy()
    names = [n for n, _ in policy.named_parameters()]
    assert partition_parameters(policy, "all").fast == tuple(names)
    assert partition_parameters(policy, "all").slow == ()
    assert partition_parameters(policy, "head.*").fast == ("head.weight", "head.bias")
    assert partition_parameters(policy, ["head.bias", "encoder.bias"]).fast == ("encoder.bias", "head.bias")
    by_type = partition_parameters(policy, GroupLinear)
    assert by_type.fast and all("attention" in n for n in by_type.fast)
    assert partition_parameters(policy, [GroupLSTMCell]).fast == MECHANISMS
    by_pred = partition_parameters(policy, lambda name, p: p.dim() == 1)
    assert by_pred.fast == tuple(n for n, p in policy.named_parameters() if p.dim() == 1)
    # a plain tensor has no module axis: it is masked as a whole
    assert by_pred.axes["head.bias"] is None
    assert partition_parameters(policy, "head.*").num_units is None


def test_bad_specs_raise():
    policy = Policy()
    with pytest.raises(ValueError, match="matches no parameter"):
        partition_parameters(policy, "nothing.*")
    with pytest.raises(ValueError, match="matches no parameter"):
        partition_parameters(policy, nn.Conv2d)
    with pytest.raises(ValueError, match="must be None, 'all'"):
        partition_parameters(policy, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be None, 'all'"):
        partition_parameters(policy, [])


def test_mixed_module_counts_raise():
    two = nn.ModuleDict({"a": GroupLSTMCell(2, 3, num_units=3), "b": GroupGRUCell(2, 3, num_units=4)})
    with pytest.raises(ValueError, match=r"different numbers of modules \[3, 4\]"):
        partition_parameters(two)
    assert partition_parameters(two, "a.*").num_units == 3


def test_tied_parameter_counted_once():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    model = nn.Sequential(a, b)
    part = partition_parameters(model, "all")
    assert part.fast == tuple(n for n, _ in model.named_parameters())
    assert len(part.fast) == 3


def test_block_masks():
    part = partition_parameters(Policy(), lambda n, p: n in MECHANISMS or n == "head.bias")
    active = torch.tensor([True, False, True, False])
    masks = part.block_masks(active, dtype=torch.float64)
    w = masks["rim.cell.mechanisms.weight_ih"]
    assert w.shape == (4, 1, 1) and w.dtype == torch.float64
    assert masks["rim.cell.mechanisms.bias_hh"].shape == (4, 1)
    assert_close(w.flatten(), active.double())
    assert masks["head.bias"].item() == 1.0
    none = part.block_masks(torch.zeros(4), dtype=torch.float32)
    assert none["head.bias"].item() == 0.0
    with pytest.raises(ValueError, match="length 3 but the fast parameters have num_units=4"):
        part.block_masks(torch.ones(3), dtype=torch.float32)
    with pytest.raises(ValueError, match="reduce_activity"):
        part.block_masks(torch.ones(2, 4), dtype=torch.float32)
    with pytest.raises(ValueError, match="must be a tensor"):
        part.block_masks([1, 0, 1, 0], dtype=torch.float32)  # type: ignore[arg-type]


def test_reduce_activity():
    masks = torch.zeros(3, 2, 4)
    masks[0, 0, 0] = masks[1, 1, 1] = masks[2, 0, 1] = masks[2, 1, 1] = 1.0
    assert reduce_activity(masks).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert_close(reduce_activity(masks, "mean"), torch.tensor([1 / 6, 3 / 6, 0.0, 0.0]))
    assert reduce_activity(masks, "mean", threshold=0.5).tolist() == [0.0, 1.0, 0.0, 0.0]
    assert reduce_activity(masks[0]).tolist() == [1.0, 0.0, 0.0, 0.0]  # (B, N)
    assert reduce_activity(masks.bool()).dtype == torch.get_default_dtype()
    assert reduce_activity(masks.double(), "mean").dtype == torch.float64
    with pytest.raises(ValueError, match="reduction='sum'"):
        reduce_activity(masks, "sum")
    with pytest.raises(ValueError, match=r"\(\.\.\., num_units\)"):
        reduce_activity(torch.tensor(1.0))


def test_rim_masks_reduce_to_selected_modules():
    torch.manual_seed(0)
    rim = RIM(4, 12, num_units=4, k=1, input_value_size=5)
    _, _, masks = rim(torch.randn(3, 2, 4))
    active = reduce_activity(masks)
    assert active.shape == (4,) and 1 <= active.sum() <= 4
    assert torch.equal(active.bool(), masks.flatten(0, 1).bool().any(0))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_attention_preset_swaps_the_rim_roles(cell):
    policy = Policy(cell)
    default, modules, reverse = (partition_parameters(policy, f) for f in (None, "modules", "attention"))
    assert modules == default  # the named preset is the default
    attention = tuple(n for n in default.slow if n.startswith(("rim.cell.input_attention.", "rim.cell.comm_attention.")))
    assert reverse.fast == attention and len(attention) == 6  # key, value, query; qkv, output w/b
    assert set(default.fast) <= set(reverse.slow)  # the mechanisms become slow
    rim_part = {n for n, _ in policy.named_parameters() if n.startswith("rim.")}
    assert set(reverse.fast) | set(default.fast) == rim_part  # an exact swap on the RIM
    # outside the RIM (encoders, heads) everything is slow in both
    assert {"encoder.weight", "encoder.bias", "head.weight", "head.bias"} <= set(default.slow) & set(reverse.slow)
    # per-module blocks where the attention has a module axis; keys/values are one block
    assert reverse.num_units == 4
    assert reverse.axes["rim.cell.input_attention.query.weight"] == 0
    assert reverse.axes["rim.cell.comm_attention.output.bias"] == 0
    assert reverse.axes["rim.cell.input_attention.key.weight"] is None


def test_learned_initial_state_is_slow_in_both_presets():
    torch.manual_seed(0)
    rim = RIM(6, 12, num_units=4, k=2, init="learned")
    for preset in ("modules", "attention"):
        assert {"cell.h0", "cell.c0"} <= set(partition_parameters(rim, preset).slow)
