"""Weight averaging (`mediar3d average-weights`, mediar3d.train.average): the mean of the weights, the
checks that the checkpoints are one network, and what the metadata keeps."""

from __future__ import annotations

import pytest
import torch

from mediar3d.cli import main
from mediar3d.errors import InputError
from mediar3d.model import build_model, load_checkpoint, read_checkpoint, save_checkpoint
from mediar3d.train.average import average_checkpoints

torch.set_num_threads(2)

META = {"train_diameter_px": 14.0, "prob_threshold": 0.4, "validation_seg": 0.9,
        "train_config": {"init_checkpoint": "stage5.pt"}}


def _checkpoint(path, seed: int, context_px: int = 6, **meta):
    """A float32 checkpoint of a 2.5D network with weights drawn from `seed`."""
    torch.manual_seed(seed)
    return save_checkpoint(path, build_model("mit_b0", context_px=context_px).eval(), {**META, **meta}, half=False)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    folder = tmp_path_factory.mktemp("average")
    return _checkpoint(folder / "a.pt", 0), _checkpoint(folder / "b.pt", 1, validation_seg=0.8)


def test_average_is_the_mean_of_the_weights(two, tmp_path):
    out = average_checkpoints(two, tmp_path / "soup.pt")
    states = [read_checkpoint(p)["state_dict"] for p in two]
    soup, meta = load_checkpoint(out)
    averaged = soup.state_dict()
    floats = [k for k, v in states[0].items() if v.is_floating_point()]
    assert floats and any(not torch.equal(states[0][k], states[1][k]) for k in floats)
    for k in floats:
        torch.testing.assert_close(averaged[k], (states[0][k] + states[1][k]) / 2)
    sources = meta["weight_average_of"]
    assert [s["file"] for s in sources] == [str(p) for p in two]
    assert all(len(s["sha256"]) == 64 for s in sources) and sources[1]["validation_seg"] == 0.8
    assert meta["prob_threshold"] == 0.4 and "validation_seg" not in meta  # shared threshold kept, run record not
    assert meta["context_px"] == 6 and meta["train_diameter_px"] == 14.0


def test_a_checkpoint_averaged_with_itself_predicts_the_same(two, tmp_path):
    out = average_checkpoints([two[0], two[0]], tmp_path / "same.pt")
    (a, _), (b, _) = load_checkpoint(two[0]), load_checkpoint(out)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_different_thresholds_are_dropped(two, tmp_path):
    other = _checkpoint(tmp_path / "c.pt", 2, prob_threshold=0.35)
    _, meta = load_checkpoint(average_checkpoints([two[0], other], tmp_path / "soup.pt"))
    assert "prob_threshold" not in meta


def test_other_networks_and_settings_are_refused(two, tmp_path):
    flat = _checkpoint(tmp_path / "flat.pt", 3, context_px=0)
    with pytest.raises(InputError, match=r"flat\.pt: in_channels is 1"):
        average_checkpoints([two[0], flat], tmp_path / "x.pt")
    wide = _checkpoint(tmp_path / "wide.pt", 4, train_diameter_px=20.0)
    with pytest.raises(InputError, match="disagree on train_diameter_px"):
        average_checkpoints([two[0], wide], tmp_path / "x.pt")
    with pytest.raises(InputError, match="two or more"):
        average_checkpoints([two[0]], tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_cli_writes_the_average_and_reports_bad_input_in_one_line(two, tmp_path, capsys):
    out = tmp_path / "soup.pt"
    assert main(["average-weights", str(two[0]), str(two[1]), "--out", str(out)]) == 0
    assert load_checkpoint(out)[1]["weight_average_of"]
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["average-weights", str(two[0]), str(bad), "--out", str(tmp_path / "y.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "corrupt.pt" in err and not (tmp_path / "y.pt").exists()
