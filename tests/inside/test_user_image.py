"""User images → MNIST-style 28×28: rendered digits are classified correctly; geometry and errors."""

from __future__ import annotations

import os

import click
import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from convscope.cli.images import image_option, resolve_image, resolve_images, split_image_texts
from convscope.data.user_image import UserImageError, load_user_image, mnistify
from convscope.inference import predict_logits

FONT = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")


def render_digit(digit: str, *, size=(320, 260), at=(190, 30), font_size=150, stroke=4,
                 ink=(25, 25, 40), paper=(245, 242, 235)) -> Image.Image:
    """Dark ink on light paper, large and off-centre (to the right), like a photo of a note."""
    image = Image.new("RGB", size, paper)
    font = ImageFont.truetype(FONT, font_size)
    ImageDraw.Draw(image).text(at, digit, fill=ink, font=font, stroke_width=stroke, stroke_fill=ink)
    return image


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(image.shape)
    total = image.astype(float).sum()
    return float((ys * image).sum() / total), float((xs * image).sum() / total)


def test_rendered_digits_are_classified_correctly(shipped_model, tmp_path):
    images = []
    for digit in "0123456789":
        path = tmp_path / f"digit{digit}.png"
        render_digit(digit).save(path)
        picked = resolve_image(str(path))
        assert picked.label is None and picked.source == str(path) and picked.original.shape == (260, 320)
        images.append(picked.image)
    predicted = predict_logits(shipped_model, np.stack(images)).argmax(1).tolist()
    correct = [p == d for d, p in enumerate(predicted)]
    assert predicted[4] == 4
    assert sum(correct) >= 9, f"predicted {predicted}"


def test_naive_resize_without_the_mnist_steps_fails(shipped_model):
    """The preprocessing matters: the same drawing, only resized to 28×28, is not read as the digit."""
    drawings = [render_digit(d) for d in "0123456789"]
    naive = np.stack([np.asarray(d.convert("L").resize((28, 28), Image.Resampling.LANCZOS)) for d in drawings])
    prepared = np.stack([mnistify(d).image for d in drawings])
    naive_correct = int((predict_logits(shipped_model, naive).argmax(1) == np.arange(10)).sum())
    prepared_correct = int((predict_logits(shipped_model, prepared).argmax(1) == np.arange(10)).sum())
    assert prepared_correct >= 9
    assert naive_correct <= 5


def test_mnist_geometry(test_split):
    prepared = mnistify(render_digit("7", stroke=0))
    image = prepared.image
    assert image.dtype == np.uint8 and image.shape == (28, 28)
    assert prepared.inverted  # light paper → inverted
    assert image[0].max() == 0 and image[:, 0].max() == 0  # background black
    assert image.max() == 255
    rows = np.flatnonzero(image.max(1) > 0)
    cols = np.flatnonzero(image.max(0) > 0)
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert max(height, width) in (20, 21)  # fitted into 20×20 (+1 for anti-aliasing fringe)
    assert min(height, width) < 20  # aspect ratio kept (a 7 is taller than wide)
    com_y, com_x = _centre_of_mass(image)
    assert abs(com_y - 13.5) <= 0.75 and abs(com_x - 13.5) <= 0.75
    # An MNIST digit survives the round trip essentially unchanged in placement.
    digit = test_split.images[0]
    again = mnistify(digit).image
    assert not mnistify(digit).inverted
    assert abs(_centre_of_mass(again)[0] - _centre_of_mass(digit)[0]) <= 1.0
    assert abs(_centre_of_mass(again)[1] - _centre_of_mass(digit)[1]) <= 1.0


def test_light_on_dark_and_transparent_inputs():
    dark = render_digit("3", ink=(240, 240, 240), paper=(10, 10, 10))
    light = render_digit("3")
    a, b = mnistify(dark), mnistify(light)
    assert not a.inverted and b.inverted
    assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 8  # same digit either way
    # Black ink on a transparent background (a typical drawing app export).
    rgba = np.zeros((200, 200, 4), np.uint8)
    rgba[40:160, 95:105, 3] = 255  # an opaque black "1"
    one = mnistify(Image.fromarray(rgba, "RGBA")).image
    assert one.max() == 255 and one[:, :10].max() == 0
    assert (one > 0).sum(0).argmax() in range(12, 16)  # the stroke is centred


def test_bad_files_give_clear_errors(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    blank = tmp_path / "blank.png"
    Image.new("L", (40, 40), 255).save(blank)
    with pytest.raises(UserImageError, match="empty"):
        load_user_image(empty)
    with pytest.raises(UserImageError, match="not an image"):
        load_user_image(text)
    with pytest.raises(UserImageError, match="no ink"):
        load_user_image(blank)
    with pytest.raises(UserImageError, match="no such file"):
        load_user_image(tmp_path / "missing.png")
    with pytest.raises(UserImageError, match="folder"):
        load_user_image(tmp_path)
    with pytest.raises(UserImageError, match="shape"):
        mnistify(np.zeros((2, 3, 5)))
    for bad in [str(empty), str(text), str(blank), "test:99999", "test:abc", "", "train:-1"]:
        with pytest.raises(click.ClickException) as info:
            resolve_image(bad)
        assert "\n" not in info.value.message and info.value.message


def test_dataset_refs(mnist_dir, test_split):
    picked = resolve_image("test:1270", mnist_dir)
    assert picked.label == 4 and picked.original is None and not picked.is_file
    assert np.array_equal(picked.image, test_split.images[1270])
    assert split_image_texts(["test:1,test:2", "a,b.png"]) == ["test:1", "test:2", "a,b.png"]
    assert [p.source for p in resolve_images("test:3,train:7", mnist_dir)] == ["test:3", "train:7"]


def test_image_option_forms():
    from click.testing import CliRunner

    @click.command()
    @image_option
    def one(image):
        click.echo(repr(image))

    @click.command()
    @image_option(default=None, multiple=True)
    def many(image):
        click.echo(repr(image))

    runner = CliRunner()
    assert runner.invoke(one, []).output.strip() == "'test:1302'"
    assert runner.invoke(one, ["-i", "train:7"]).output.strip() == "'train:7'"
    assert runner.invoke(many, ["-i", "a.png", "--image", "test:1"]).output.strip() == "('a.png', 'test:1')"
    assert "PNG/JPG" in runner.invoke(one, ["--help"]).output
