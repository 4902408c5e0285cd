"""Image inputs shared by every CLI command: ``test:1302`` / ``train:7`` or a PNG/JPG file.

Usage in a command::

    from convscope.cli.images import image_option, resolve_image

    @click.command()
    @image_option                      # adds --image/-i (text, default test:1302)
    @data_dir_option
    def explain(image, data_dir, ...):
        picked = resolve_image(image, data_dir)   # ImageInput; a bad input stops with one clear error
        picked.image      # (28, 28) uint8, what the model sees
        picked.label      # int for dataset images, None for files
        picked.source     # "test:1302" or the file path
        picked.original   # the file's grayscale pixels (None for dataset images)

``image_option(multiple=True)`` gives a tuple of texts (``-i test:1 -i test:2``, or
comma-separated ``-i test:1,test:2``); :func:`resolve_images` resolves them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import click
import numpy as np

from convscope.cli.common import fail

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_IMAGE = "test:1302"


@dataclass(frozen=True)
class ImageInput:
    """One image ready for a model.

    Attributes:
        image: uint8 ``(H, W)`` (gray) or ``(H, W, 3)``, what the model sees.
        label: the dataset label, or ``None`` for a user file.
        source: ``"test:1302"``-style reference or the file path, for titles and JSON.
        original: the user file as loaded (uint8, reduced for figures) or ``None``
            for dataset images.
    """

    image: np.ndarray
    label: int | None
    source: str
    original: np.ndarray | None

    @property
    def is_file(self) -> bool:
        """Whether the image came from a user file (was converted to MNIST style)."""
        return self.original is not None


def resolve_image(
    text: str, data_dir: str | os.PathLike | None = None, dataset: str | None = None, *, spec=None
) -> ImageInput:
    """Resolve ``test:1302`` / ``train:7`` or an image file path to an :class:`ImageInput`.

    With the model's ``spec``, ``test:N`` / ``train:N`` refer to ``dataset`` (default:
    the model's own) and files are converted as the spec says (``digit``, ``resize``,
    ``crop``, ``none``); without it, MNIST and MNIST-style digits. Any problem stops
    the command with one clear error line (``click.ClickException``).
    """
    from convscope.data import DataNotFoundError, DatasetError, dataset_image, is_dataset_ref
    from convscope.data.idx import IdxError
    from convscope.data.user_image import UserImageError, load_image_for_model, load_user_image

    text = str(text).strip()
    if not text:
        fail("no image given: use test:INDEX, train:INDEX, an image file or a folder of images")
    if is_dataset_ref(text):
        try:
            if spec is not None:
                from convscope.data import parse_image_ref
                from convscope.data.catalog import split_for_model

                split_name, index = parse_image_ref(text)
                split = split_for_model(spec, split_name, dataset, data_dir)
                if not 0 <= index < len(split):
                    raise DatasetError(
                        f"{text}: the {split_name} set has {len(split)} images, so the index must be 0..{len(split) - 1}"
                    )
                image, label = split.images[index], int(split.labels[index])
            else:
                image, label = dataset_image(text, dataset=dataset or "mnist", data_dir=data_dir)
        except (DatasetError, DataNotFoundError, IdxError, OSError) as exc:
            fail(str(exc))
        return ImageInput(image=np.array(image, dtype=np.uint8), label=int(label), source=text, original=None)
    if ":" in text and text.split(":", 1)[0] in ("test", "train", "val", "validation") and not os.path.exists(text):
        fail(f"cannot read image reference {text!r}: use test:INDEX or train:INDEX (INDEX a whole number), e.g. test:1302")
    try:
        prepared = load_image_for_model(text, spec) if spec is not None else load_user_image(text)
    except UserImageError as exc:
        fail(str(exc))
    return ImageInput(image=prepared.image, label=None, source=text, original=prepared.original)


def split_image_texts(texts: str | Sequence[str]) -> list[str]:
    """``("test:1,test:2", "a.png", "photos/")`` → ``["test:1", "test:2", "a.png", "photos/x.png", …]``
    (commas split dataset refs only; a folder gives its image files in sorted order)."""
    from convscope.data import is_dataset_ref
    from convscope.data.catalog import IMAGE_SUFFIXES

    if isinstance(texts, str):
        texts = [texts]
    out: list[str] = []
    for text in texts:
        parts = [part.strip() for part in str(text).split(",")]
        if len(parts) > 1 and all(is_dataset_ref(part) for part in parts if part):
            out.extend(part for part in parts if part)
        elif os.path.isdir(str(text).strip()):
            folder = str(text).strip()
            files = sorted(
                os.path.join(folder, name) for name in os.listdir(folder)
                if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and os.path.isfile(os.path.join(folder, name))
            )
            if not files:
                fail(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(files)
        else:
            out.append(str(text).strip())
    return out


def resolve_images(
    texts: str | Sequence[str], data_dir: str | os.PathLike | None = None, dataset: str | None = None, *, spec=None
) -> list[ImageInput]:
    """Resolve several image texts (see :func:`split_image_texts`; folders expand to their images)."""
    return [resolve_image(text, data_dir, dataset, spec=spec) for text in split_image_texts(texts)]


@overload
def image_option(func: F) -> F: ...
@overload
def image_option(
    func: None = None, *, default: str | None = ..., multiple: bool = ..., help: str | None = ...
) -> Callable[[F], F]: ...


def image_option(
    func: F | None = None,
    *,
    default: str | None = DEFAULT_IMAGE,
    multiple: bool = False,
    help: str | None = None,
):
    """Click option ``--image/-i`` giving the raw text as parameter ``image``.

    Use bare (``@image_option``) or configured (``@image_option(default=None, multiple=True)``).
    Resolve it inside the command with :func:`resolve_image` (or :func:`resolve_images`
    when ``multiple``), after ``--data-dir`` is known.
    """
    text = help or (
        "Image: test:INDEX or train:INDEX (original MNIST file order, 0-based), or a PNG/JPG file "
        "(converted like MNIST: grayscale, inverted if the background is light, cropped, fitted "
        "into 20x20, centred by mass in 28x28)."
        + (" Repeat, or separate dataset references with commas." if multiple else "")
    )

    def decorate(f: F) -> F:
        if multiple:
            return click.option(
                "--image", "-i", "image", multiple=True,
                default=(default,) if isinstance(default, str) else (default or ()),
                show_default=bool(default), metavar="IMAGE", help=text,
            )(f)
        return click.option(
            "--image", "-i", "image", default=default, show_default=default is not None,
            required=default is None, metavar="IMAGE", help=text,
        )(f)

    if func is not None:
        return decorate(func)
    return decorate


__all__ = ["DEFAULT_IMAGE", "ImageInput", "image_option", "resolve_image", "resolve_images", "split_image_texts"]
