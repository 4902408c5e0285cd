"""The ``convscope`` command line: thin — parse, call an engine, render, write.

Subcommands live in their own modules and are imported only when used, so
``convscope --help`` stays fast. Each entry maps a command name to
``module:function``; a module that is not part of this installation is skipped.
"""

from __future__ import annotations

import importlib

import click

from convscope import __version__

COMMANDS: dict[str, str] = {
    # foundation
    "train": "convscope.cli.train_cmd:train",
    "evaluate": "convscope.cli.evaluate_cmd:evaluate",
    "summary": "convscope.cli.evaluate_cmd:summary_command",
    "data": "convscope.cli.data_cmd:data",
    "import": "convscope.cli.import_cmd:import_command",
    # look inside
    "activations": "convscope.cli.inside_cmd:activations",
    "filters": "convscope.cli.inside_cmd:filters",
    "predict": "convscope.cli.inside_cmd:predict",
    "compare": "convscope.cli.inside_cmd:compare",
    "mistakes": "convscope.cli.inside_cmd:mistakes",
    "topk": "convscope.cli.inside_cmd:topk",
    # optimised input patterns
    "oip": "convscope.cli.oip_cmd:oip",
    "classes": "convscope.cli.oip_cmd:classes",
    # dreams
    "dream": "convscope.cli.dream_cmd:dream",
    # attributions
    "explain": "convscope.cli.explain_cmd:explain",
    # the atlas
    "report": "convscope.cli.report_cmd:report",
    # the explorer
    "serve": "convscope.cli.serve_cmd:serve",
}


def _available(target: str) -> bool:
    module_name = target.split(":")[0]
    return importlib.util.find_spec(module_name) is not None


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, target in COMMANDS.items() if _available(target)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _available(target):
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="convscope")
def main() -> None:
    """convscope — see inside a convolutional network.

    Look at every layer and map of a convolutional network: activation grids,
    optimised input patterns (OIPs), class patterns, attributions, DeepDreams,
    an offline HTML atlas (report) and a live explorer (serve). Every command
    works right after install on the shipped MNIST models (seed_cnn, reference)
    and the built-in MNIST test set, and on your own model (--model: convscope
    files, a Keras .h5/.keras file, or FILE.py:FUNCTION) and data (--dataset:
    mnist, fashion-mnist, an IDX folder, a folder of images, an .npz).

    Layers are addressed one way everywhere: Conv2D_3 (a layer), Conv2D_3:120
    (map 120), Conv2D_3:120@1,2 (one unit). Images: test:1302, train:7, or an
    image file, converted as the model's spec says.
    """
