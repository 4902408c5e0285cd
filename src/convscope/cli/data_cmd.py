"""``convscope data``: where the dataset files are found, fetch them into the cache,
verify them against the canonical hashes."""

from __future__ import annotations

from pathlib import Path

import click

from convscope.cli.common import FiniteFloatRange, echo_err, emit_json, fail, json_option

_DATASET_CHOICE = click.Choice(["mnist", "fashion-mnist"])


def _dataset_option(func):
    return click.option(
        "--dataset", type=_DATASET_CHOICE, default="mnist", show_default=True, help="Which dataset."
    )(func)


def _data_dir_option(func):
    # Unlike the shared option this one does not read $CONVSCOPE_DATA itself: the
    # search reports the variable as its own step, so `where` can say why.
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="An explicit folder (searched alone, as every command's --data-dir is).",
    )(func)


@click.group("data")
def data() -> None:
    """Find, download and verify the MNIST / Fashion-MNIST IDX files.

    Each split is searched on its own, in this order: --data-dir; $CONVSCOPE_DATA
    (a folder, or a parent holding mnist/ or fashion-mnist/); system copies
    (Debian's dataset-fashion-mnist in /usr/share/datasets/fashion-mnist); the user
    cache ($XDG_CACHE_HOME/convscope or ~/.cache/convscope); for the MNIST test set,
    the copy shipped inside convscope; otherwise a download from the public https
    mirrors (or $CONVSCOPE_MIRRORS), verified against the canonical SHA-256 of each
    decompressed file.
    """


@data.command("where", short_help="Show which folder each split comes from, and why.")
@_dataset_option
@_data_dir_option
@json_option
def where(dataset: str, data_dir: Path | None, as_json: bool) -> None:
    """Show which folder each split of --dataset comes from, and why (each searched
    folder with what was found there). Each split is searched on its own; the MNIST
    test set also ships inside convscope. Nothing is downloaded.

    \b
    Example:
      convscope data where --dataset fashion-mnist
    """
    from convscope.data.sources import SPLIT_FILES, SPLIT_NAMES, cache_dir, dataset_info, mirrors_for, search

    try:
        info = dataset_info(dataset)
        checks = search(info.name, data_dir)
        split_checks = {split: search(info.name, data_dir, split=split) for split in SPLIT_FILES}
    except ValueError as exc:
        fail(str(exc))

    def described(found) -> dict:
        chosen = next((c for c in found if c.usable), None)
        return {
            "chosen": str(chosen.folder) if chosen else None,
            "chosen_because": chosen.origin if chosen else None,
            "searched": [
                {"origin": c.origin, "folder": str(c.folder), "usable": c.usable, "holds": c.holds, "status": c.reason}
                for c in found
            ],
            "download_into": None if chosen or data_dir is not None else str(cache_dir(info.name)),
        }

    result = {
        "dataset": info.name,
        **described(checks),  # all four files in one folder (what `data verify` checks)
        "splits": {split: described(found) for split, found in split_checks.items()},
        "mirrors": list(mirrors_for(info)),
    }
    if as_json:
        emit_json(result)
        return
    for split in ("test", "train"):
        found = split_checks[split]
        chosen = next((c for c in found if c.usable), None)
        click.echo(f"{info.name} {SPLIT_NAMES[split]} ({', '.join(SPLIT_FILES[split])}):")
        for number, c in enumerate(found, 1):
            mark = "→" if chosen is c else " "
            click.echo(f" {mark} {number}. {c.origin:<15} {c.folder}  [{c.reason}]")
        if chosen is not None:
            click.echo(f"   Uses {chosen.folder} (found via {chosen.origin}).")
        elif data_dir is not None:
            click.echo(f"   --data-dir {data_dir} does not hold it; commands that need it stop with an error.")
        else:
            click.echo(
                f"   Nothing found: the first command that needs it downloads {info.name} into {cache_dir(info.name)} "
                f"from {mirrors_for(info)[0]} (or run `convscope data fetch --dataset {info.name}`)."
            )


@data.command("fetch", short_help="Download into the user cache and verify.")
@_dataset_option
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    help="Base URL serving FILE.gz (repeatable; tried in order). Default: $CONVSCOPE_MIRRORS or the public mirrors.",
)
@click.option("--retries", type=click.IntRange(1, 100), default=3, show_default=True, help="Attempts per mirror.")
@click.option("--timeout", type=FiniteFloatRange(0.1, 3600), default=30.0, show_default=True, help="Seconds per request.")
@json_option
def fetch(dataset: str, mirrors: tuple[str, ...], retries: int, timeout: float, as_json: bool) -> None:
    """Download --dataset into the user cache and verify it.

    Files already in the cache are hash-checked; missing or damaged ones are
    downloaded (progress on stderr), verified against the canonical SHA-256 of the
    decompressed content, and only then written — a failed or corrupt download
    leaves the cache as it was.

    \b
    Example:
      convscope data fetch --dataset mnist
    """
    from convscope.data.download import DownloadError, check_file, download_dataset, verify_folder
    from convscope.data.sources import cache_dir, dataset_info

    info = dataset_info(dataset)
    target = cache_dir(info.name)
    before = {name: (check.sha256, check.path) for name in info.files for check in [check_file(target, name, info)]}
    try:
        download_dataset(
            info, target, mirrors=mirrors or None, retries=retries, timeout=timeout, progress=True, replace_bad=True
        )
    except DownloadError as exc:
        fail(f"{exc}. Nothing was written to {target}. Offline? Put the four .gz files there by hand.")
    except OSError as exc:
        fail(f"cannot write into {target}: {exc.strerror or exc}")
    checks = verify_folder(target, info)
    downloaded = [c.name for c in checks if before[c.name] != (c.sha256, c.path)]
    _report_checks(info.name, target, checks, as_json, downloaded=downloaded)


@data.command("verify", short_help="Hash-check the files against the canonical SHA-256s.")
@_dataset_option
@_data_dir_option
@json_option
def verify(dataset: str, data_dir: Path | None, as_json: bool) -> None:
    """Hash-check the --dataset files that commands would use (or those in
    --data-dir): each decompressed file against its canonical SHA-256, plus the IDX
    structure. Exit status 1 when a file is missing, damaged or different.

    \b
    Example:
      convscope data verify --data-dir ~/mnist
    """
    from convscope.data.download import verify_folder
    from convscope.data.download import locate
    from convscope.data.sources import DataNotFoundError, dataset_info

    info = dataset_info(dataset)
    try:
        folder = locate(info.name, data_dir, download=False)
    except DataNotFoundError as exc:
        fail(str(exc))
    _report_checks(info.name, folder, verify_folder(folder, info), as_json)


def _report_checks(dataset: str, folder: Path, checks, as_json: bool, downloaded: list[str] | None = None) -> None:
    ok = all(c.ok for c in checks)
    if as_json:
        emit_json(
            {
                "dataset": dataset,
                "folder": str(folder),
                "ok": ok,
                **({"downloaded": downloaded} if downloaded is not None else {}),
                "files": [
                    {
                        "name": c.name,
                        "path": str(c.path) if c.path else None,
                        "sha256": c.sha256,
                        "expected_sha256": c.expected,
                        "shape": list(c.shape) if c.shape else None,
                        "ok": c.ok,
                        "error": c.error,
                    }
                    for c in checks
                ],
            }
        )
    else:
        click.echo(f"{dataset} in {folder}:")
        for c in checks:
            if c.ok:
                how = "SHA-256 ok" if c.expected else "no canonical hash known; IDX structure ok"
                fresh = " (downloaded now)" if downloaded and c.name in downloaded else ""
                click.echo(f"  ok    {c.name:<25} {str(c.shape):<16} {how}{fresh}")
            else:
                click.echo(f"  FAIL  {c.name:<25} {c.error}")
    if not ok:
        bad = [c.name for c in checks if not c.ok]
        fail(f"{len(bad)} of {len(checks)} {dataset} files failed verification in {folder} ({', '.join(bad)}); "
             f"`convscope data fetch --dataset {dataset}` replaces damaged files in the cache; or point --data-dir at good copies")


__all__ = ["data"]
