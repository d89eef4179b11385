"""preprocess_crops: the one inference preprocessing step (resize + mean/std, CHW)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from abaw_ros.runtime import ModelMetadata, load_crop_images, preprocess_crops

META = ModelMetadata(
    tasks=("va", "au"),
    window_length=8,
    input_size=32,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    feature_names=("stride32",),
    feature_shapes=((960, 1, 1),),
)


def test_normalises_each_channel_with_the_model_mean_and_std():
    crop = np.zeros((32, 32, 3), np.uint8)
    crop[..., 0], crop[..., 1], crop[..., 2] = 255, 128, 0
    out = preprocess_crops([crop], META)
    assert out.shape == (1, 3, 32, 32) and out.dtype == np.float32
    expected = [(1.0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0.0 - 0.406) / 0.225]
    np.testing.assert_allclose(out[0, :, 5, 7], expected, rtol=1e-6)


def test_resizes_any_crop_size_and_keeps_layout(astronaut_rgb):
    face = astronaut_rgb[30:230, 150:330]  # 200x180, not square
    small = astronaut_rgb[100:116, 200:216]  # 16x16: enlarged
    out = preprocess_crops([face, small], META)
    assert out.shape == (2, 3, 32, 32)
    ref = cv2.resize(face, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    np.testing.assert_allclose(out[0].transpose(1, 2, 0) * META.std + META.mean, ref, atol=1e-5)
    # channel order is kept: the astronaut's red suit is red, not blue, after preprocessing
    suit = preprocess_crops([astronaut_rgb[400:432, 0:32]], META)[0] * np.array(META.std)[:, None, None]
    assert suit[0].mean() > suit[2].mean()


@pytest.mark.parametrize(
    ("crop", "message"),
    [
        (np.zeros((32, 32), np.uint8), "expected HxWx3"),
        (np.zeros((32, 32, 4), np.uint8), "expected HxWx3"),
        (np.zeros((32, 32, 3), np.float32), "expected uint8"),
        (np.zeros((0, 32, 3), np.uint8), "empty"),
    ],
)
def test_rejects_what_it_cannot_read(crop, message):
    with pytest.raises(ValueError, match=message):
        preprocess_crops([crop], META)


def test_reads_a_folder_of_crops_as_rgb(tmp_path, astronaut_rgb):
    cv2.imwrite(str(tmp_path / "b.png"), cv2.cvtColor(astronaut_rgb[:64, :64], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(astronaut_rgb[64:128, :64], cv2.COLOR_RGB2BGR))
    crops = load_crop_images(tmp_path)
    assert len(crops) == 2
    np.testing.assert_array_equal(crops[0], astronaut_rgb[64:128, :64])  # sorted by name, RGB order
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_crop_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no face-crop images"):
        load_crop_images(tmp_path / "empty")


def test_metadata_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="au_thresholds has 3 values"):
        ModelMetadata(**{**META.to_dict(), "au_thresholds": (0.5, 0.5, 0.5)})
    with pytest.raises(ValueError, match="output_mode='clip'"):
        ModelMetadata(**{**META.to_dict(), "output_mode": "clip"})
    with pytest.raises(ValueError, match="lacks"):
        ModelMetadata.from_dict({"tasks": ["va"]})
