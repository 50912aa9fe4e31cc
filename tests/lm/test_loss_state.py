"""The loss state beside a Trainer checkpoint carries its checksum: a damaged or stripped file is refused."""

from __future__ import annotations

import pytest
import torch

from unikd.integrity import IntegrityError
from unikd.lm.loss_state import load_loss_state, save_loss_state


def test_round_trip_and_damage_is_refused_by_name(tmp_path):
    path = tmp_path / "unikd_loss_state.pt"
    state = {"schedule.t": torch.tensor(0.4), "schedule.momentum": torch.tensor(0.1)}
    save_loss_state(state, path)
    assert torch.equal(load_loss_state(path)["schedule.t"], state["schedule.t"])
    torch.save(state, path)  # re-saved without the checksum
    with pytest.raises(IntegrityError, match=r"unikd_loss_state\.pt' is damaged.*delete this file"):
        load_loss_state(path)
    save_loss_state(state, path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="is damaged"):
        load_loss_state(path)
