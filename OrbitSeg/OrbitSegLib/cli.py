"""The ``orbitseg`` command line.

Every subcommand calls the same core functions as the Slicer module and batch mode. Each command has a
``<command>_parser`` function (its options) directly above its ``cmd_<command>`` handler. Errors print
one line on stderr (:func:`protocol.error_line`) and exit with a non-zero status (1 for input problems,
130 for Ctrl-C).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .errors import OrbitSegError
from .protocol import error_line, progress_line

log = logging.getLogger("orbitseg")


def _progress_printer(mode: str):
    """Progress callback printing to stderr: ``text`` lines, ``json`` lines (for a parent process) or nothing."""
    if mode == "none":
        return None

    def show(fraction: float, message: str) -> None:
        if mode == "json":
            print(progress_line(fraction, message), file=sys.stderr, flush=True)
        else:
            print(f"[{fraction * 100:5.1f}%] {message}", file=sys.stderr, flush=True)

    return show


class _ProgressBar:
    """A tqdm bar driven by ``progress(fraction, message)`` callbacks (for long runs such as training)."""

    def __init__(self, description: str):
        from tqdm import tqdm
        self.bar = tqdm(total=1000, desc=description, unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.update(max(0, int(fraction * 1000) - self.bar.n))
        self.bar.set_postfix_str(message, refresh=False)

    def close(self) -> None:
        self.bar.close()


# --- phantom setting (anatomy model and scanner world), shared by phantom, train and evaluate ---
def _add_phantom_setting(parser: argparse.ArgumentParser) -> None:
    """``--anatomy`` and ``--world`` of the phantom cases (defaults: the classic series)."""
    from .phantom_settings import ANATOMY_MODELS, WORLDS

    parser.add_argument("--anatomy", default="classic", choices=ANATOMY_MODELS,
                        help="phantom anatomy model: classic (wall surfaces, spindle muscles) or sweep "
                             "(cone orbit, area-profile muscles); see docs/phantom.md")
    parser.add_argument("--world", default="default", choices=WORLDS,
                        help="phantom scanner world: default (the bundled models' training series) or wide "
                             "(any clinical CT: 0.2-1 mm pixels, 0.5-5 mm slices, tilt, kernels, contrast)")


def _phantom_setting(args) -> str:
    """The phantom setting for descriptions: empty for the classic series."""
    return "" if (args.anatomy, args.world) == ("classic", "default") else f", {args.anatomy} anatomy, {args.world} world"


def _add_inference_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="sv-net", help="model name (sv-net, seq-unet, or a trained one) or .pt path")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "gpu", "cpu"],
                        help="auto uses a CUDA GPU when present and says so when it falls back to the CPU")
    parser.add_argument("--window", type=int, default=None,
                        help="SV-Net sliding-window depth in slices (default: the whole eye in one pass; paper: 32)")
    parser.add_argument("--overlap", type=float, default=0.5, help="SV-Net sliding-window overlap along z (0..1)")
    parser.add_argument("--step", type=int, default=None,
                        help="SV-Net window step in slices (--window 32 --step 1 is the paper's protocol; overrides --overlap)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows (SV-Net) or slice triplets (SEQ-UNET) per pass")
    parser.add_argument("--grid-shifts", type=int, default=1, choices=[1, 2, 4],
                        help="test-time augmentation: average the model over this many model grids shifted by half a "
                             "voxel (2: about twice the model time, slightly more accurate; default 1: off)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all available)")


def _inference_options(args):
    from .inference import InferenceOptions, configure_threads
    configure_threads(args.threads)
    return InferenceOptions(window=args.window, overlap=args.overlap, step=args.step, batch_size=args.batch_size,
                            grid_shifts=args.grid_shifts)


def segment_parser(commands) -> None:
    """``orbitseg segment``: one CT."""
    segment = commands.add_parser("segment", help="segment one CT", description=(
        "Segment one CT (NIfTI, NRRD, MHA or a DICOM folder) and write segmentation.seg.nrrd, labels.nii.gz, "
        "volumes.csv (and agreement.csv with --reference) into --out."))
    segment.add_argument("ct", nargs="?", help="CT file or DICOM series folder")
    segment.add_argument("--sample", action="store_true", help="use the bundled sample case (and its reference)")
    segment.add_argument("--out", required=True, help="output folder")
    segment.add_argument("--start", type=int, default=None, help="first axial slice (0-based index); default: automatic")
    segment.add_argument("--end", type=int, default=None, help="last axial slice (0-based, inclusive); default: automatic")
    segment.add_argument("--side", default="both", choices=["both", "right", "left"], help="right = OD, left = OS")
    segment.add_argument("--reference", default=None,
                         help="reference .seg.nrrd (segments matched by name or terminology) or labelmap")
    segment.add_argument("--voi", default=None,
                         help="JSON file with start_slice, end_slice and per-eye index boxes (as written in run.json)")
    segment.add_argument("--progress", default="text", choices=["text", "json", "none"],
                         help="progress messages on stderr: text, JSON lines (for a parent process) or none")
    _add_inference_options(segment)
    segment.set_defaults(func=cmd_segment)


def cmd_segment(args) -> int:
    from .pipeline import run_segmentation
    from .qa import format_findings
    from .sample import sample_case
    from .tables import format_volume_table
    from .voi import VOI

    if args.sample == (args.ct is not None):
        raise OrbitSegError("give either a CT path or --sample")
    ct, reference = (args.ct, args.reference)
    if args.sample:
        case = sample_case()
        ct, reference = case["image"], reference or case["reference"]
        print(f"Bundled sample case: {ct}", file=sys.stderr)
    voi = VOI.from_file(args.voi) if args.voi else None
    result = run_segmentation(ct, args.out, args.model, reference_path=reference, voi=voi, start_slice=args.start,
                              end_slice=args.end, side=args.side, device=args.device,
                              options=_inference_options(args), progress=_progress_printer(args.progress))
    print(f"Device: {result.device} ({result.device_note})", file=sys.stderr)
    print(f"Slices {result.voi.start_slice}..{result.voi.end_slice}; outputs in {args.out}", file=sys.stderr)
    print(format_volume_table(result.rows))
    findings = format_findings(result.findings)
    if findings:
        print("\n" + findings)
    return 0


def batch_parser(commands) -> None:
    """``orbitseg batch``: a study list."""
    batch = commands.add_parser("batch", help="segment every study of a study list; tables and an HTML report",
                                description=(
        "Segment every study of a CSV/TSV study list (columns id, image; optional reference, start_slice, "
        "end_slice, side; paths relative to the list) into --out: <id>/segmentation.seg.nrrd and overlay.png, "
        "volumes.csv, volumes_wide.csv, agreement.csv, errors.csv, report.html and batch.log. Rerunning "
        "skips finished studies. --threads is per worker (default: available cores / workers). Exit status: "
        "0 all studies finished, 1 some failed (see errors.csv) or bad input, 130 interrupted."))
    batch.add_argument("studies", help="study list (.csv, or .tsv for tab-separated)")
    batch.add_argument("--out", required=True, help="output folder")
    batch.add_argument("--workers", type=int, default=1, help="parallel worker processes on this machine")
    batch.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="Dask distributed scheduler address (e.g. tcp://host:8786) to run the studies on")
    batch.add_argument("--force", action="store_true", help="recompute studies that are already finished")
    batch.add_argument("--progress", default="text", choices=["text", "json", "none"],
                       help="progress on stderr: a bar, JSON lines (for a parent process) or none")
    _add_inference_options(batch)
    batch.set_defaults(func=cmd_batch)


def cmd_batch(args) -> int:
    from .batch import BatchConfig, run_batch
    from .batch.progress import BatchProgress

    config = BatchConfig(model=args.model, device=args.device, options=_inference_options(args),
                         workers=args.workers, threads=args.threads, scheduler=args.scheduler, force=args.force)
    progress = BatchProgress(args.progress)
    try:
        summary = run_batch(args.studies, args.out, config, progress=progress)
    finally:
        progress.close()
    counts = summary.counts
    print(f"{counts.done + counts.skipped} of {counts.total} studies finished ({counts.done} now, "
          f"{counts.skipped} earlier), {counts.failed} failed", file=sys.stderr)
    if counts.failed:
        print(f"Failed studies: {summary.paths['errors']}", file=sys.stderr)
    print(f"Report: {summary.paths['report']}", file=sys.stderr)
    if summary.interrupted:
        print("orbitseg: interrupted; finished studies are kept, run the same command again to resume",
              file=sys.stderr)
        return 130
    return 1 if counts.failed else 0


def evaluate_parser(commands) -> None:
    """``orbitseg evaluate``: accuracy on references."""
    evaluate = commands.add_parser("evaluate", help="accuracy of a model on studies with references or on fresh phantom cases",
                                   description="Runs batch mode with references and writes accuracy.md (IoU, Dice, VS, "
                                               "sensitivity, specificity per structure and side; volume MAE, RMSE, "
                                               "Pearson R; 95% confidence intervals of the mean IoU and of R), "
                                               "overlap_summary.csv and headline.json into --out.")
    evaluate.add_argument("--studies", default=None, help="study list with a reference column")
    evaluate.add_argument("--phantom", type=int, default=None, metavar="N", help="evaluate on N fresh phantom cases")
    evaluate.add_argument("--seed", type=int, default=999, help="phantom seed (keep it apart from training seeds)")
    _add_phantom_setting(evaluate)
    evaluate.add_argument("--out", required=True, help="output folder")
    evaluate.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    evaluate.add_argument("--force", action="store_true", help="recompute finished studies")
    evaluate.add_argument("--title", default=None, help="heading of the accuracy report")
    evaluate.add_argument("--record", action="store_true",
                          help="store the headline numbers in the model file's card (metrics.held_out; with --grid-shifts N, metrics.held_out_grid_shifts_N)")
    evaluate.add_argument("--progress", default="text", choices=["text", "json", "none"])
    _add_inference_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from .batch import BatchConfig
    from .batch.progress import BatchProgress
    from .evaluation import evaluate, phantom_studies

    if (args.studies is None) == (args.phantom is None):
        raise OrbitSegError("give either --studies LIST (with a reference column) or --phantom N")
    studies = args.studies or phantom_studies(f"{args.out}/data", args.phantom, args.seed, args.anatomy, args.world)
    config = BatchConfig(model=args.model, device=args.device, options=_inference_options(args),
                         workers=args.workers, threads=args.threads, force=args.force)
    title = args.title or f"{args.model} on {'phantom seed %d' % args.seed if args.phantom else studies}"
    progress = BatchProgress(args.progress)
    try:
        numbers = evaluate(studies, args.out, config, title, progress=progress)
    finally:
        progress.close()
    print(open(f"{args.out}/accuracy.md", encoding="utf-8").read())
    if args.record and numbers["failed_studies"]:
        print(f"Not recorded in the model card: {numbers['failed_studies']} studies failed (see "
              f"{args.out}/results/errors.csv)", file=sys.stderr)
    elif args.record:
        from .model_store import resolve_model
        from .models import record_metrics

        data = f"{args.phantom} phantom cases, seed {args.seed}{_phantom_setting(args)}" if args.phantom else str(studies)
        path = resolve_model(args.model)
        key = "held_out" if args.grid_shifts == 1 else f"held_out_grid_shifts_{args.grid_shifts}"
        record_metrics(path, key, {"data": data, **numbers})
        print(f"Held-out metrics recorded in the model card of {path} (metrics.{key})", file=sys.stderr)
    return 1 if numbers["failed_studies"] else 0


def phantom_parser(commands) -> None:
    """``orbitseg phantom``: synthetic cases."""
    phantom = commands.add_parser("phantom", help="generate synthetic orbital CT cases with ground truth")
    phantom.add_argument("--out", required=True, help="output folder")
    phantom.add_argument("--cases", type=int, default=10, help="number of cases")
    phantom.add_argument("--seed", type=int, default=0, help="random seed (cases are deterministic per seed and index)")
    phantom.add_argument("--small", action="store_true", help="small low-resolution cases (for quick tests)")
    phantom.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_phantom_setting(phantom)
    phantom.set_defaults(func=cmd_phantom)


def cmd_phantom(args) -> int:
    from .phantom import write_dataset
    from tqdm import tqdm

    with tqdm(total=args.cases, desc="phantom cases", unit="case", disable=args.quiet) as bar:
        studies = write_dataset(args.out, args.cases, args.seed, small=args.small, anatomy=args.anatomy,
                                world=args.world, progress=lambda done, total: bar.update(done - bar.n))
    print(f"Wrote {args.cases} cases and the study list {studies}")
    return 0


def train_parser(commands) -> None:
    """``orbitseg train``: train a model."""
    train = commands.add_parser("train", help="train SEQ-UNET or SV-Net (k-fold cross-validation, resumable)",
                                description="Train a model; writes training_log.csv, fold<i>/last.pt and best.pt, "
                                            "and <name>.pt into --out. Rerun the same command to resume.")
    train.add_argument("--studies", default=None, help="study list CSV/TSV with id, image, reference columns")
    train.add_argument("--folder", default=None, help="folder of case folders, each with ct.* and reference.seg.nrrd")
    train.add_argument("--phantom", type=int, default=None, metavar="N", help="train on N phantom cases generated on the fly")
    train.add_argument("--phantom-seed", type=int, default=0, help="phantom seed")
    _add_phantom_setting(train)
    train.add_argument("--out", required=True, help="output folder")
    train.add_argument("--model", default="sv-net", choices=["sv-net", "seq-unet"], help="architecture")
    train.add_argument("--preset", default="default", choices=["default", "paper"],
                       help="network widths: OrbitSeg's small default or the paper's full size")
    train.add_argument("--name", default=None, help="name of the saved model (default: <model>-custom)")
    train.add_argument("--init", default=None, metavar="MODEL",
                       help="fine-tune: start from this model's weights (a name such as sv-net, or a .pt path) "
                            "instead of random ones; its network configuration replaces --preset")
    train.add_argument("--spacing", type=float, nargs=3, default=(0.5, 0.5, 1.0), metavar=("X", "Y", "Z"),
                       help="model grid spacing in mm")
    train.add_argument("--input-size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                       help="training patch in voxels (default 80 80 32 for SV-Net, 80 80 3 for SEQ-UNET)")
    train.add_argument("--fixed-inplane-size", action="store_true",
                       help="resample every slice to the patch's in-plane size (the SEQ-UNET paper's 64x64)")
    train.add_argument("--folds", type=int, default=5, help="k of k-fold cross-validation (1: no validation)")
    train.add_argument("--fold", type=int, default=None, help="run only this fold (default: all folds)")
    train.add_argument("--epochs", type=int, default=100)
    train.add_argument("--batch-size", type=int, default=None, help="patches (SV-Net, paper 4) or triplets (SEQ-UNET, paper 32)")
    train.add_argument("--lr", type=float, default=None, help="Adam learning rate (paper: 1e-4 SV-Net, 5e-5 SEQ-UNET)")
    train.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"],
                       help="constant, or cosine decay to 2%% of --lr over the epochs")
    train.add_argument("--loss", default="paper", choices=["paper", "bce", "dice", "dice_ce"],
                       help="paper: sigmoid cross-entropy (SV-Net) / Dice (SEQ-UNET)")
    train.add_argument("--soft-targets", action="store_true",
                       help="train on partial-volume targets: each structure's fraction around every model-grid "
                            "point (the reference resampled linearly) instead of the nearest reference label")
    train.add_argument("--structure-weight", action="append", default=[], metavar="STRUCTURE=WEIGHT",
                       help="weight a structure's terms of the loss (others 1), e.g. superior_rectus=2; repeatable")
    train.add_argument("--samples-per-epoch", type=int, default=None, help="training patches per epoch (default: one per eye)")
    train.add_argument("--no-augment", action="store_true", help="switch MONAI augmentation off")
    train.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the training patches")
    train.add_argument("--data-seed", type=int, default=None,
                       help="seed of the prepared data (VOI jitter, so the --cache files) and of the fold split "
                            "(default: --seed); keep it to reuse a cache while --seed draws other patches")
    train.add_argument("--device", default="auto", choices=["auto", "cuda", "gpu", "cpu"])
    train.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    train.add_argument("--precision", default="auto", choices=["auto", "float32"],
                       help="auto: mixed precision (float16 autocast) on a GPU, float32 on a CPU; float32: always")
    train.add_argument("--restart", action="store_true", help="start afresh instead of resuming from fold*/last.pt")
    train.add_argument("--cache", default=None, help="folder caching the prepared training volumes")
    train.add_argument("--workers", type=int, default=1,
                       help="processes preparing the studies not yet in --cache (the data are the same with any number)")
    train.add_argument("--description", default=None, help="one-line model description for the model card")
    train.add_argument("--ensemble", action="store_true",
                       help="save the average of all folds' best models as <name>.pt (all folds must run)")
    train.add_argument("--progress", default="text", choices=["text", "json", "none"])
    train.set_defaults(func=cmd_train)


def _structure_weights(items: list[str]) -> dict[str, float]:
    """``--structure-weight KEY=W`` options as ``{key: weight}`` (checked by :class:`TrainConfig`)."""
    weights = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            weights[key.strip()] = float(value)
        except ValueError:
            raise OrbitSegError(f"--structure-weight takes STRUCTURE=WEIGHT, e.g. superior_rectus=2, got {item!r}") from None
    return weights


def cmd_train(args) -> int:
    from .inference import configure_threads
    from .training import TrainConfig, studies_from_folder, studies_from_list, studies_from_phantom, train

    sources = [x is not None for x in (args.studies, args.folder, args.phantom)]
    if sum(sources) != 1:
        raise OrbitSegError("give exactly one training data source: --studies LIST, --folder DIR or --phantom N")
    if args.studies:
        studies, description = studies_from_list(args.studies), f"study list {args.studies}"
    elif args.folder:
        studies, description = studies_from_folder(args.folder), f"case folder {args.folder}"
    else:
        studies = studies_from_phantom(args.phantom, args.phantom_seed, anatomy=args.anatomy, world=args.world)
        description = (f"OrbitSeg synthetic orbital CT phantom, {args.phantom} cases, seed {args.phantom_seed}"
                       f"{_phantom_setting(args)}")
    configure_threads(args.threads)
    config = TrainConfig(out_dir=args.out, architecture=args.model, preset=args.preset, init=args.init, name=args.name,
                         spacing=tuple(args.spacing), input_size=tuple(args.input_size) if args.input_size else None,
                         fixed_inplane_size=args.fixed_inplane_size, folds=args.folds, fold=args.fold,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_schedule=args.lr_schedule,
                         loss=args.loss,
                         samples_per_epoch=args.samples_per_epoch, augment=not args.no_augment, seed=args.seed,
                         data_seed=args.data_seed,
                         device=args.device, resume=not args.restart, cache_dir=args.cache,
                         description=args.description or "", ensemble=args.ensemble,
                         soft_targets=args.soft_targets, structure_weights=_structure_weights(args.structure_weight),
                         prepare_workers=args.workers, precision=args.precision)
    progress = _ProgressBar("training") if args.progress == "text" else _progress_printer(args.progress)
    try:
        result = train(config, studies, data_description=description, progress=progress)
    except KeyboardInterrupt:
        print(f"orbitseg: training stopped; the last good checkpoints are in {args.out}/fold*/", file=sys.stderr)
        return 130
    finally:
        if isinstance(progress, _ProgressBar):
            progress.close()
    if config.ensemble:
        dice = ", ".join(f"fold {f} {score:.4f}" for f, score in sorted(result.fold_scores.items()))
        print(f"Model saved: {result.model_path} (ensemble of {len(result.fold_scores)} folds; validation Dice {dice})")
    elif config.folds == 1:
        print(f"Model saved: {result.model_path} (no validation: the epoch with the lowest training loss, "
              f"{result.metrics['train_loss']:.4f})")
    else:
        print(f"Model saved: {result.model_path} (fold {result.best_fold}, validation Dice "
              f"{result.fold_scores[result.best_fold]:.4f})")
    return 0


def adapt_parser(commands) -> None:
    """``orbitseg adapt``: fine-tune a model on a site's corrected studies with chosen defaults."""
    adapt = commands.add_parser("adapt", help="adapt a model to your site from a few corrected studies",
                                description="Fine-tune a model on 2-20 corrected studies of your site, with defaults "
                                            "chosen for that (docs/training.md). With 4 studies or more, one eye is "
                                            "held back and its agreement before and after is printed.")
    adapt.add_argument("studies", help="a site folder (Save as training case) or a study list with id, image, "
                                       "reference columns")
    adapt.add_argument("--out", required=True, help="the adapted model's .pt file; its work folder <name>-adapt/ "
                                                    "lies beside it (running again resumes there)")
    adapt.add_argument("--init", default="sv-net", metavar="MODEL",
                       help="the model to adapt: sv-net (default), seq-unet, a trained model's name or a .pt file")
    adapt.add_argument("--device", default="auto", choices=["auto", "cuda", "gpu", "cpu"])
    adapt.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    adapt.add_argument("--workers", type=int, default=1, help="processes preparing the studies")
    adapt.add_argument("--progress", default="text", choices=["text", "json", "none"])
    adapt.set_defaults(func=cmd_adapt)


def cmd_adapt(args) -> int:
    from .inference import configure_threads
    from .training.adapt import adapt

    configure_threads(args.threads)
    progress = _ProgressBar("adapting") if args.progress == "text" else _progress_printer(args.progress)
    try:
        result = adapt(args.studies, args.out, args.init, device=args.device, workers=args.workers, progress=progress)
    except KeyboardInterrupt:
        print("orbitseg: adapting stopped; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if isinstance(progress, _ProgressBar):
            progress.close()
    print(result.summary())
    return 0


def ensemble_parser(commands) -> None:
    """``orbitseg ensemble``: combine models."""
    ensemble = commands.add_parser("ensemble", help="combine models into one that averages their outputs",
                                   description="Write one model file holding the given models (same architecture, "
                                               "configuration, window and grid); it segments with the average of "
                                               "their sigmoid outputs, at the cost of running each of them. With "
                                               "--average-weights it holds one network with their mean weights "
                                               "instead, for models fine-tuned from a common start.")
    ensemble.add_argument("models", nargs="+", metavar="MODEL", help="model names or .pt files (at least two networks)")
    ensemble.add_argument("--out", required=True, help="the ensemble's .pt file")
    ensemble.add_argument("--description", default=None, help="one-line description for the model card")
    ensemble.add_argument("--average-weights", action="store_true",
                          help="one network with the models' mean weights (a 'model soup', one network's cost)")
    ensemble.set_defaults(func=cmd_ensemble)


def cmd_ensemble(args) -> int:
    from .model_store import resolve_model
    from .models.checkpoint import save_ensemble, save_weight_average

    if Path(args.out).is_dir():
        raise OrbitSegError(f"--out {args.out} is a folder; give the new model's file name, e.g. {args.out}/my-model.pt")
    sources = [resolve_model(m) for m in args.models]
    average = args.average_weights
    card = (save_weight_average if average else save_ensemble)(args.out, sources, description=args.description or "")
    networks = (f"one {card.architecture} network from {len(sources)}" if average
                else f"{card.members} {card.architecture} networks")
    print(f"{'Weight average' if average else 'Ensemble'} saved: {args.out} ({networks}, "
          f"{'×'.join(f'{v:g}' for v in card.spacing)} mm grid)")
    return 0


def models_parser(commands) -> None:
    """``orbitseg models``: list the models."""
    models = commands.add_parser("models", help="list the models OrbitSeg can find, with their cards")
    models.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    from .model_store import available_models, model_dirs
    from .models.checkpoint import read_card

    models = available_models()
    if not models:
        print("No models found in: " + ", ".join(str(d) for d in model_dirs()))
        return 0
    for name, path in models.items():
        try:
            card = read_card(path)
            print(f"{name:<16}{card.architecture:<10}{path}")
            print(f"{'':<16}{card.summary()}")
        except OrbitSegError as exc:
            print(f"{name:<16}unusable: {exc}")
    return 0


def device_parser(commands) -> None:
    """``orbitseg device``: the compute device a run would get."""
    device = commands.add_parser("device", help="say which compute device a run would use",
                                 description="Print one line naming the device a run with --device would use "
                                             "(the panels ask this in a background process).")
    device.add_argument("--device", default="auto", choices=["auto", "cuda", "gpu", "cpu"])
    device.set_defaults(func=cmd_device)


def cmd_device(args) -> int:
    from .inference import select_device

    print(select_device(args.device).note)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orbitseg", description=(
        "Segment the rectus muscles, optic nerve and globe of both eyes on orbital CT and measure their volumes."))
    parser.add_argument("--version", action="version", version=f"orbitseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in (segment_parser, batch_parser, phantom_parser, train_parser, adapt_parser, ensemble_parser,
                        evaluate_parser, models_parser, device_parser):
        add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except OrbitSegError as exc:
        print(error_line(str(exc)), file=sys.stderr)
        return 1
    except OSError as exc:  # a disk or permission problem met after the checks (e.g. the disk filled up)
        where = f"{exc.filename}: " if exc.filename else ""
        print(error_line(f"{where}{exc.strerror or exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("orbitseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
