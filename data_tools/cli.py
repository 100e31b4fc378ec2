"""``python -m data_tools``: the command-line front end, a thin argparse layer over the library.

Subcommands: ``convert`` (:mod:`data_tools.convert`); ``info`` (:mod:`data_tools.stats`),
``filter``, ``merge``, ``split``, ``relabel`` (:mod:`data_tools.curate`), ``preview``
(:mod:`data_tools.preview`); ``export-hf``, ``export-lerobot``, ``push`` (:mod:`data_tools.hf_export`,
:mod:`data_tools.lerobot_export`, :mod:`data_tools.push`). Each subparser's ``func(args) -> int``
returns the exit status. The library modules never import this one: a program that wants some of
the subcommands on its own parser uses :func:`add_convert`, :func:`add_curate_subcommands` or
:func:`add_publish_subcommands`.

Shared by every subcommand:

* one error handler (:func:`command`): a library error (``DataToolsError``,
  ``DatasetFormatError``, ``OSError``) becomes one ``error: ...`` line on stderr and exit
  status 2, Ctrl-C ``error: interrupted`` and 130; every warning is one ``warning: ...`` line;
* one output-path check, :func:`data_tools.outputs.check_output`, applied by the library
  functions themselves (an existing output needs ``--force``; an output that is, holds or is
  inside an input is refused);
* one ``--words`` syntax (:func:`parse_words`): ``AXIS=POSITIVE,NEGATIVE``, repeatable.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import warnings
from typing import Callable, Sequence

from data_tools import curate
from data_tools.convert import convert
from data_tools.errors import DataToolsError, DataToolsWarning
from data_tools.hdf5_format import EPISODE_KINDS, DatasetFormatError, dataset_info
from data_tools.hf_export import export_hf
from data_tools.lerobot_export import export_lerobot
from data_tools.preview import preview
from data_tools.push import push
from data_tools.stats import format_info, info
from data_tools.talk_tweak import DEFAULT_LABEL, LABELS, SIGMA_M, WINDOW

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
LIBRARY_ERRORS = (DataToolsError, DatasetFormatError, OSError)  # OSError covers FileExistsError

Command = Callable[[argparse.Namespace], int]

# --------------------------------------------------------------------------------------------
# The error handler


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def command(fn: Command) -> Command:
    """Wrap a subcommand: library errors become one ``error: ...`` line on stderr and exit
    status 2 (Ctrl-C: ``error: interrupted``, 130); warnings are printed as ``warning: ...``
    lines as they happen (data_tools' own every time, others as the warning filters say)."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("always", DataToolsWarning)
            warnings.showwarning = _show_warning
            try:
                return int(fn(args) or 0)
            except LIBRARY_ERRORS as e:
                print(f"error: {e}", file=sys.stderr)
                return EXIT_ERROR
            except KeyboardInterrupt:
                print("error: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED

    return run


# --------------------------------------------------------------------------------------------
# Options shared by several subcommands

AXES = ("x", "y", "z")
WORDS_HELP = ("direction words of an axis, positive then negative, e.g. y=right,left (repeatable; "
              "axes not given keep +x forward, +y left, +z up)")


def _json_words(item: str) -> dict[str, tuple[str, str]]:
    try:
        obj = json.loads(item)
    except json.JSONDecodeError as e:
        raise DataToolsError(f"--words: not JSON ({e.msg})") from None
    if not isinstance(obj, dict) or not all(isinstance(v, list) and len(v) == 2 for v in obj.values()):
        raise DataToolsError('--words: expected a JSON object such as {"y": ["right", "left"]}')
    return {str(k): (str(v[0]), str(v[1])) for k, v in obj.items()}


def _axis_words(item: str) -> dict[str, tuple[str, str]]:
    axis, sep, pair = item.partition("=")
    parts = [p.strip() for p in pair.split(",")]
    if not sep or axis.strip() not in AXES or len(parts) != 2 or not all(parts):
        raise DataToolsError(f"--words {item!r}: expected AXIS=POSITIVE,NEGATIVE with AXIS x, y or z "
                             "(e.g. y=left,right)")
    return {axis.strip(): (parts[0], parts[1])}


def parse_words(items: Sequence[str] | None) -> dict[str, tuple[str, str]] | None:
    """The ``--words`` values of any subcommand -> ``{axis: (positive, negative)}`` or None.

    The syntax is ``AXIS=POSITIVE,NEGATIVE`` with AXIS x, y or z, one axis per ``--words`` (a
    later value for the same axis wins). A JSON object ``{"y": ["right", "left"]}`` (the older
    ``convert`` syntax) is still accepted. Raises :class:`DataToolsError` with a message
    starting ``--words``.
    """
    if not items:
        return None
    words: dict[str, tuple[str, str]] = {}
    for item in items:
        pairs = _json_words(item) if item.lstrip().startswith("{") else _axis_words(item)
        for axis in pairs:
            if axis not in AXES:
                raise DataToolsError(f"--words {item!r}: axis {axis!r} is not x, y or z")
        words.update(pairs)
    return words


def _add_words(p: argparse.ArgumentParser) -> None:
    p.add_argument("--words", action="append", metavar="AXIS=POS,NEG", help=WORDS_HELP)


def _add_label(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label", choices=LABELS, default=DEFAULT_LABEL,
                   help=f"what the talk-and-tweak window sums (default {DEFAULT_LABEL}, what a training run labels "
                        "its online steps with): correction = executed minus the logged policy_action (which way "
                        "the operator corrected the policy; every intervened step needs a policy_action); action = "
                        "the executed actions (Eq. 12 as printed; for logs without the policy's proposals)")


def _add_force(p: argparse._ActionsContainer, help: str = "overwrite an existing output file") -> None:
    p.add_argument("--force", action="store_true", help=help)


def _add_quiet(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: do not clobber a global --quiet of a parent parser
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar")


def _progress_on(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False)


# --------------------------------------------------------------------------------------------
# convert


@command
def _cmd_convert(args: argparse.Namespace) -> int:
    summary = convert(
        args.sessions,
        args.output,
        append=args.append,
        force=args.force,
        window=args.window,
        sigma=args.sigma,
        words=parse_words(args.words),
        progress=not args.quiet,
        workers=args.workers,
        label=args.label,
    )
    if not args.quiet:
        print(summary)
    return 0


def add_convert(sub: argparse._SubParsersAction) -> None:
    """Register ``convert``."""
    p = sub.add_parser(
        "convert",
        help="teleoperation log sessions -> HDF5 talk-and-tweak dataset",
        description="Convert teleoperation log sessions (format v1, see docs/teleop-log-format.md) into one "
        "HDF5 talk-and-tweak dataset. Every input is validated before anything is written; the "
        "output is written to a temporary file renamed on success. Inputs are never modified.",
    )
    p.add_argument("sessions", nargs="+", metavar="SESSION", help="session folder(s) holding session.json")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="dataset file to write (.hdf5)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add the episodes to the existing dataset OUT")
    _add_force(mode, "overwrite OUT if it exists")
    p.add_argument("--window", type=int, default=WINDOW, metavar="J",
                   help=f"talk-and-tweak window J (default {WINDOW})")
    p.add_argument("--sigma", type=float, default=SIGMA_M, metavar="M",
                   help=f"talk-and-tweak threshold in metres (default {SIGMA_M})")
    _add_words(p)
    _add_label(p)
    p.add_argument("--workers", type=int, default=None, metavar="N", help="PNG decoding threads")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(func=_cmd_convert)


# --------------------------------------------------------------------------------------------
# curation: info, filter, merge, split, relabel, preview


@command
def _cmd_info(args: argparse.Namespace) -> int:
    summary = info(args.path)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_info(summary))
    return 0


@command
def _cmd_filter(args: argparse.Namespace) -> int:
    total = len(dataset_info(args.src).episode_names)
    kept = curate.filter_dataset(
        args.src, args.out, task=args.task, success=args.success, kind=args.kind, min_length=args.min_length,
        max_length=args.max_length, has_intervention=args.has_intervention, force=args.force,
        progress=_progress_on(args),
    )
    print(f"kept {kept} of {total} episodes -> {args.out}")
    return 0


@command
def _cmd_merge(args: argparse.Namespace) -> int:
    n = curate.merge(args.srcs, args.out, force=args.force, progress=_progress_on(args))
    print(f"merged {n} episodes from {len(args.srcs)} files -> {args.out}")
    return 0


@command
def _cmd_split(args: argparse.Namespace) -> int:
    masks = curate.split(args.path, out=args.out, valid_fraction=args.valid_fraction, seed=args.seed,
                         by_task=not args.no_stratify, in_place=args.in_place, force=args.force,
                         progress=_progress_on(args))
    target = args.path if args.in_place else args.out
    print(f"train {len(masks['train'])} / valid {len(masks['valid'])} episodes -> {target}:/mask")
    return 0


@command
def _cmd_relabel(args: argparse.Namespace) -> int:
    stats = curate.relabel(args.src, args.out, window=args.window, sigma=args.sigma, words=parse_words(args.words),
                           translation_scale_m=args.translation_scale_m, force=args.force,
                           progress=_progress_on(args), label=args.label)
    print(f"relabelled {stats['intervened_steps']} intervened steps in {stats['episodes']} episodes (label "
          f"{args.label}): {stats['changed']} commands changed -> {args.out}")
    return 0


@command
def _cmd_preview(args: argparse.Namespace) -> int:
    result = preview(args.path, args.episode, args.out, camera=args.camera, every=args.every,
                     max_frames=args.max_frames, force=args.force, progress=_progress_on(args))
    source = ", ".join(result["cameras"]) or "action plot"
    print(f"{result['episode']}: {result['frames']} frames (every {result['stride']} step(s), {source}) "
          f"-> {result['path']}")
    return 0


def _add_filter(subparsers) -> None:
    p = subparsers.add_parser("filter", help="keep the episodes that match",
                              description="Write the episodes that pass every given criterion to a new file.")
    p.add_argument("src", help="input dataset")
    p.add_argument("-o", "--out", required=True, help="output dataset (new file)")
    p.add_argument("--task", action="extend", nargs="+", metavar="TASK",
                   help="keep these tasks (repeatable; quote tasks with spaces)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--success", dest="success", action="store_const", const=True, default=None,
                   help="only successful episodes (a reward > 0)")
    g.add_argument("--failure", dest="success", action="store_const", const=False, help="only failed episodes")
    p.add_argument("--kind", choices=EPISODE_KINDS, help="only demos or only online episodes")
    p.add_argument("--min-length", type=int, metavar="N", help="at least N steps")
    p.add_argument("--max-length", type=int, metavar="N", help="at most N steps")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--has-intervention", dest="has_intervention", action="store_const", const=True, default=None,
                   help="only episodes with an intervened step")
    g.add_argument("--no-intervention", dest="has_intervention", action="store_const", const=False,
                   help="only episodes without intervention")
    _add_force(p)
    _add_quiet(p)
    p.set_defaults(func=_cmd_filter)


def _add_split(subparsers) -> None:
    p = subparsers.add_parser("split", help="train/valid masks",
                              description="Write /mask/train and /mask/valid (stratified per task, "
                                          "deterministic from --seed).")
    p.add_argument("path", help="input dataset")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("-o", "--out", help="write a copy with the masks here")
    g.add_argument("--in-place", action="store_true", help="rewrite PATH with the masks (temp file + rename)")
    p.add_argument("--valid-fraction", type=float, default=0.1, help="fraction of each task's episodes (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-stratify", action="store_true", help="split all episodes together, not per task")
    _add_force(p)
    _add_quiet(p)
    p.set_defaults(func=_cmd_split)


def _add_relabel(subparsers) -> None:
    p = subparsers.add_parser("relabel", help="recompute refinement commands",
                              description="Recompute the talk-and-tweak command of every intervened step "
                                          "with another window J, threshold sigma, words or label source.")
    p.add_argument("src", help="input dataset")
    p.add_argument("-o", "--out", required=True, help="output dataset (new file)")
    p.add_argument("--window", type=int, default=WINDOW, metavar="J",
                   help=f"window length in steps (default {WINDOW})")
    p.add_argument("--sigma", type=float, default=SIGMA_M, help=f"threshold in metres (default {SIGMA_M})")
    _add_words(p)
    _add_label(p)
    p.add_argument("--translation-scale-m", type=float, metavar="X",
                   help="metres per action unit, when the file's env_args does not say")
    _add_force(p)
    _add_quiet(p)
    p.set_defaults(func=_cmd_relabel)


def _add_preview(subparsers) -> None:
    p = subparsers.add_parser("preview", help="GIF / PNG of one episode",
                              description="Draw an episode's frames with action, intervention and command "
                                          "as an animated GIF (.gif) or a PNG contact sheet (.png).")
    p.add_argument("path", help="input dataset")
    p.add_argument("--episode", required=True, help="episode name (demo_3) or index (3)")
    p.add_argument("-o", "--out", required=True, help="output .gif or .png")
    p.add_argument("--camera", help="one image key of obs/ (default: all cameras side by side)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="draw every N-th step (default 1)")
    p.add_argument("--max-frames", type=int, default=200, help="at most this many frames (default 200)")
    _add_force(p)
    _add_quiet(p)
    p.set_defaults(func=_cmd_preview)


def add_curate_subcommands(subparsers) -> None:
    """Register ``info``, ``filter``, ``merge``, ``split``, ``relabel`` and ``preview`` on an
    ``argparse`` subparsers object; each sets ``func(args) -> int`` (0 ok, 2 on an error)."""
    p = subparsers.add_parser("info", help="summary per task and kind",
                              description="Episodes, steps, success rate, intervention ratio and "
                                          "refinement-command histogram per task and kind, and in total.")
    p.add_argument("path", help="HDF5 talk-and-tweak dataset")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_info)

    _add_filter(subparsers)

    p = subparsers.add_parser("merge", help="concatenate datasets",
                              description="Concatenate the episodes of several datasets (same fps, actions "
                                          "and observations) into a new file.")
    p.add_argument("srcs", nargs="+", metavar="SRC", help="input datasets, in order")
    p.add_argument("-o", "--out", required=True, help="output dataset (new file)")
    _add_force(p)
    _add_quiet(p)
    p.set_defaults(func=_cmd_merge)

    _add_split(subparsers)
    _add_relabel(subparsers)
    _add_preview(subparsers)


# --------------------------------------------------------------------------------------------
# publishing: export-hf, export-lerobot, push


@command
def _cmd_export_hf(args: argparse.Namespace) -> int:
    out = export_hf(args.dataset, args.output, force=args.force, progress=_progress_on(args))
    print(f"wrote {out}")
    return 0


@command
def _cmd_export_lerobot(args: argparse.Namespace) -> int:
    out = export_lerobot(args.dataset, args.output, args.repo_id, force=args.force, progress=_progress_on(args))
    print(f"wrote {out}")
    return 0


@command
def _cmd_push(args: argparse.Namespace) -> int:
    url = push(args.dir, args.repo_id, private=args.private)
    print(f"pushed {args.dir} to {url}")
    return 0


def add_publish_subcommands(subparsers) -> None:
    """Register ``export-hf``, ``export-lerobot`` and ``push`` (each ``func(args) -> int``)."""
    p = subparsers.add_parser(
        "export-hf", help="HDF5 dataset -> Hugging Face datasets folder (parquet + card)",
        description="Export DATASET.hdf5 as a Hugging Face `datasets` folder: one row per step, "
        "parquet shards under DIR/data/ and a dataset card DIR/README.md; "
        "`datasets.load_dataset(DIR)` loads it offline.",
    )
    p.add_argument("dataset", metavar="DATASET.hdf5")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    _add_force(p, "replace an existing DIR")
    _add_quiet(p)
    p.set_defaults(func=_cmd_export_hf)

    p = subparsers.add_parser(
        "export-lerobot", help="HDF5 dataset -> LeRobotDataset v3.0 folder",
        description="Export DATASET.hdf5 as a LeRobotDataset v3.0 (images, no video) with per-frame "
        "`intervention` and `refinement_command_id` (vocabulary in DIR/meta/refinement_commands.json).",
    )
    p.add_argument("dataset", metavar="DATASET.hdf5")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--repo-id", required=True, metavar="ID", help="<user or org>/<name>")
    _add_force(p, "replace an existing DIR")
    _add_quiet(p)
    p.set_defaults(func=_cmd_export_lerobot)

    p = subparsers.add_parser(
        "push", help="upload an exported folder to a Hugging Face Hub dataset repo",
        description="Upload DIR (from export-hf or export-lerobot) to the Hub dataset repo ID. The token "
        "comes from HF_TOKEN or `hf auth login` and is never printed. Exit 2 when the Hub is "
        "unreachable or HF_HUB_OFFLINE is on.",
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--repo-id", required=True, metavar="ID", help="<user or org>/<name>")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.set_defaults(func=_cmd_push)


# --------------------------------------------------------------------------------------------
# The program


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m data_tools`` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m data_tools",
        description="Teleoperation logs -> HDF5 talk-and-tweak datasets; curation; publishing.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_convert(sub)
    add_curate_subcommands(sub)
    add_publish_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input or usage, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    return args.func(args)
