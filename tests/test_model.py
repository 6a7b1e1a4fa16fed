"""Checkpoint finding, loading and refusal, through the product's loader."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from napari_samboxes import CheckpointError, load_model
from napari_samboxes.model import WEIGHTS_ENV, candidate_paths, find_checkpoint


def test_loads_structured_checkpoint(structured_ckpt):
    m = load_model(structured_ckpt, device="cpu")
    assert m.device == "cpu" and not m.official
    assert len(m.digest) == 32
    assert type(m.sam.mask_decoder).__module__.startswith("mobile_sam")


def test_missing_checkpoint_says_where_it_looked(tmp_path, monkeypatch):
    from napari_samboxes import model

    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nope.pt"))
    # a developer's checkout may hold real weights: look elsewhere
    monkeypatch.setattr(
        model, "CHECKOUT_WEIGHTS", tmp_path / "weights" / "mobile_sam.pt"
    )
    assert find_checkpoint() is None
    with pytest.raises(CheckpointError) as e:
        load_model()
    msg = str(e.value)
    assert "nope.pt" in msg and "fetch-weights" in msg and "user cache" in msg
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_env_variable_is_found_first(structured_ckpt, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(structured_ckpt))
    assert candidate_paths()[0][1] == Path(structured_ckpt)
    assert load_model(device="cpu").checkpoint == Path(structured_ckpt)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty"),
        (b"\x00\x01garbage" * 100, "could not be read"),
    ],
)
def test_bad_bytes(tmp_path, content, match):
    p = tmp_path / "bad.pt"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_model(p)


def test_truncated_checkpoint(tmp_path, structured_ckpt):
    p = tmp_path / "cut.pt"
    p.write_bytes(Path(structured_ckpt).read_bytes()[:200_000])
    with pytest.raises(CheckpointError, match="could not be read"):
        load_model(p)


def test_wrong_architecture(tmp_path):
    p = tmp_path / "vitb.pt"
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 64, 64, 768)}, p)
    with pytest.raises(CheckpointError, match="not MobileSAM vit_t"):
        load_model(p)
    q = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, q)
    with pytest.raises(CheckpointError, match="keys missing"):
        load_model(q)


class _Payload:
    def __reduce__(self):  # runs at unpickling time with plain torch.load
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(_Payload.marker),))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "payload-ran"
    _Payload.marker = str(marker)
    p = tmp_path / "evil.pt"
    torch.save({"x": _Payload()}, p)
    # sanity: a plain pickle load would run it
    with zipfile.ZipFile(p) as z:
        name = next(n for n in z.namelist() if n.endswith("data.pkl"))
        pickle.loads(z.read(name))
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match="refused"):
        load_model(p)
    assert not marker.exists(), "the payload ran"


def test_other_hash_is_allowed_with_a_warning(tmp_path, structured_ckpt):
    p = tmp_path / "mobile_sam.pt"
    p.write_bytes(Path(structured_ckpt).read_bytes())
    with pytest.warns(UserWarning, match="not the official MobileSAM checkpoint"):
        m = load_model(p, device="cpu")
    assert not m.official


@pytest.mark.parametrize("how", ["interrupted", "wrong-hash"])
def test_failed_download_leaves_no_file(tmp_path, monkeypatch, how):
    import pooch

    from napari_samboxes import fetch_weights

    def fake(self, url, output_file, pooch_obj, check_only=False):
        with open(output_file, "wb") as f:
            f.write(b"\x80\x02half a checkpoint" * 1000)
        if how == "interrupted":
            raise ConnectionError("connection reset halfway")

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", fake)
    with pytest.raises((ConnectionError, ValueError)):
        fetch_weights(tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- issue 11 ----------------------------------------------------------------


def test_a_tensor_of_the_wrong_shape_is_a_checkpoint_error(tmp_path, structured_ckpt):
    # item 3: load_state_dict's RuntimeError ("size mismatch") escaped
    state = torch.load(structured_ckpt, map_location="cpu", weights_only=True)
    key = next(k for k, v in state.items() if k.startswith("mask_decoder") and v.ndim)
    state[key] = torch.zeros(*(d + 1 for d in state[key].shape))
    p = tmp_path / "reshaped.pt"
    torch.save(state, p)
    with pytest.raises(CheckpointError, match="not a MobileSAM vit_t.*size mismatch"):
        load_model(p, device="cpu")


@pytest.mark.parametrize("content", [b"hello", b"hello\n" * 1000, b"\x80\x04K\x01."])
def test_any_other_file_is_a_checkpoint_error(tmp_path, content):
    # item 3: a text file "hello" raised KeyError: 101
    p = tmp_path / "hello.pt"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match="hello.pt"):
        load_model(p, device="cpu")


def test_env_variable_pointing_nowhere_is_said_not_skipped(
    tmp_path, monkeypatch, structured_ckpt, _isolated_cache
):
    # item 8: a missing $NAPARI_SAMBOXES_WEIGHTS fell back to another file
    (_isolated_cache / "mobile_sam.pt").write_bytes(Path(structured_ckpt).read_bytes())
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "typo.pt"))
    assert find_checkpoint() is None
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_ENV} is set to .*typo.pt"):
        load_model(device="cpu")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(CheckpointError, match="which is a folder"):
        load_model(device="cpu")
    monkeypatch.setenv(WEIGHTS_ENV, "")  # empty: as if unset
    assert find_checkpoint() == _isolated_cache / "mobile_sam.pt"


@pytest.mark.parametrize("device", ["mps", "cuda", "cuda:7", "tpu", "CPU"])
def test_unavailable_device_is_refused_before_loading(tmp_path, device):
    from napari_samboxes.model import DeviceError

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the device")
    mps = getattr(torch.backends, "mps", None)
    if device == "mps" and mps is not None and mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(DeviceError, match=f"device '{device}' asked for, but"):
        load_model(tmp_path / "missing.pt", device=device)


@pytest.mark.parametrize("name", ["X.PT", "x.pt", "weights.Pt"])
def test_fetch_weights_dest_with_any_case_of_pt_is_a_file(tmp_path, monkeypatch, name):
    # item 8: --dest X.PT created a folder X.PT
    import pooch

    from napari_samboxes import fetch_weights

    seen = {}

    def retrieve(url, known_hash, fname, path, progressbar):  # the network
        seen.update(fname=fname, path=Path(path))
        return str(Path(path) / fname)

    monkeypatch.setattr(pooch, "retrieve", retrieve)
    assert fetch_weights(tmp_path / "sub" / name) == tmp_path / "sub" / name
    assert seen == {"fname": name, "path": tmp_path / "sub"}
    assert not (tmp_path / "sub" / name).exists()
