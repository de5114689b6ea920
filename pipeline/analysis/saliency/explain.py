"""The saliency analysis of a finished ``ml_age`` run: settings and orchestration.

:func:`explain_run` finds the explainable SRNet runs of every device (:mod:`.inputs`), has each
run's crop networks explain the test images (:func:`pipeline.srnet.cam.saliency_method`),
computes the figures (:mod:`.stats`), draws the contact sheets (:mod:`.figures`) and writes the
report (:mod:`.report`).  Each method's maps are then checked for faithfulness on a few held-out
crops of the first run (:mod:`.faithfulness`, :mod:`pipeline.srnet.faithfulness`: deletion and
insertion curves against a random pixel order, and the model-randomisation sanity check); a
method that fails is reported as unfaithful and left out of the device's verdict.  A few held-out
crops are also perturbed until their class flips (:mod:`.adversarial`), and a defect-cnn run is
explained by :mod:`.defect_cnn`.  The torch-backed :mod:`pipeline.srnet` modules are imported
inside functions only, so importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pipeline.analysis.provenance import command_line, package_versions, read_json, utc_now
from pipeline.analysis.runfolder import RunFolder, read_record
from pipeline.analysis.saliency.adversarial import adversarial_settings, perturb_run
from pipeline.analysis.saliency.defect_cnn import explain_defect_cnn_run
from pipeline.analysis.saliency.faithfulness import check_faithfulness
from pipeline.analysis.saliency.figures import contact_sheet, faithfulness_figure
from pipeline.analysis.saliency.inputs import (
    DefectPositions,
    DeviceRuns,
    checkpoint_path,
    crop_geometry,
    points_in_crop,
    srnet_runs,
)
from pipeline.analysis.saliency.report import faithfulness_settings, write_maps, write_report
from pipeline.analysis.saliency.stats import (
    CONTENT_RHO,
    DEFECT_LIFT,
    SIGNIFICANCE,
    ContentTally,
    DefectTally,
    cells_away_from_defects,
    consistency,
    defect_shares,
    device_verdict,
    method_verdict,
    own_and_other_correlations,
    structure_features,
)
from pipeline.data.imageio import read_image
from pipeline.features.device import shown_path
from pipeline.logs import get_logger
from pipeline.srnet.crops import extract_crops
from pipeline.srnet.presets import SRNET_VARIANTS, SRNetConfig

__all__ = ["ALL_METHODS", "DEFAULT_METHODS", "SaliencyConfig", "explain_run"]

logger = get_logger(__name__)

ALL_METHODS = ("cam", "gradcam", "gradcam++", "scorecam")
"""The saliency methods (:func:`pipeline.srnet.cam.saliency_method`)."""
DEFAULT_METHODS = ("cam", "gradcam", "gradcam++")
EXPLAINED_MODELS = (*SRNET_VARIANTS, "defect-cnn")
"""The learned methods of an ``ml_age`` run the saliency tool explains."""
"""Score-CAM is left out of the default: 512 forward passes per crop (about 10 s per 64x64 crop
on two CPU cores)."""
AUTO_MIN_CELLS = 8
"""``layer='auto'`` explains layer12 when its map has at least this many cells per side."""
FAITHFULNESS_BASELINES = ("blur", "zero", "mean")
"""The baselines of the deletion and insertion curves (:data:`pipeline.srnet.faithfulness.BASELINES`)."""


def _srnet_side(patch: int, halvings: int) -> int:
    """Side of an SRNet map after ``halvings`` stride-2 poolings ('SAME': ceil at each step)."""
    side = int(patch)
    for _ in range(halvings):
        side = -(-side // 2)
    return side


@dataclass
class SaliencyConfig:
    """Settings of a saliency analysis (all recorded in ``saliency.json``).

    Parameters
    ----------
    methods : tuple of str
        From :data:`ALL_METHODS`.
    neighbourhood : int
        Chebyshev radius in pixels of a defect's neighbourhood (2: a 5x5 box).
    score_cam_batch : int
        Masked inputs per forward pass of Score-CAM.
    layer : str
        SRNet layer whose output Grad-CAM, Grad-CAM++ and Score-CAM explain: a stage name
        (``'layer12'`` is the map before global average pooling, one cell per 16 pixels;
        ``'layer10'`` one per 8; ``'layer9'`` one per 4), or ``'auto'`` (default): ``layer12``
        when its map has at least 8x8 cells (patches of 113 pixels and more, e.g. the paper's
        256: 16x16), else ``layer9`` (16x16 cells for the ``cpu`` preset's 64-pixel patches,
        where ``layer12`` has 4x4 cells that each see nearly the whole crop and localise
        nothing).  CAM exists only at ``layer12`` and is always computed there.
    device : str
        torch device: ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'auto'``.
    num_threads : int or None
        CPU threads for torch (None: the run's SRNet setting, else all cores).
    sheet_images : int
        Test images per device shown in the contact sheet.
    progress : bool
        Show progress bars.
    faithfulness_crops : int
        Held-out crops per device (test images of the first run, alternating their true classes,
        every crop network of each image in turn) on which each method's faithfulness is checked
        (:mod:`pipeline.srnet.faithfulness`): the first ones for the randomisation check, the
        first *informative* ones (whose baseline lowers the explained class's probability by at
        least 0.1) for deletion and insertion; 0 skips the checks.  Each informative crop costs
        ``2 * (faithfulness_steps - 1)`` forward passes per method and as many for the random
        reference.  With the default 16 the signed-rank test at 2.5 % passes a map that beats the
        random order on 15 of 16 crops whatever the sizes of the gains, and on as few as 9 of 16
        when its losses are its smallest differences; fewer than 6 informative crops leave the
        deletion/insertion part inconclusive.
    faithfulness_steps : int
        Steps of the deletion and insertion curves (each removes or restores ``1/steps`` of the
        pixels).
    faithfulness_baseline : str
        What deleted pixels become: ``'blur'`` (Gaussian, sigma 5 pixels: removes hot pixels and
        fine texture, keeps brightness and colour), ``'zero'`` or ``'mean'``.
    faithfulness_cascade : bool
        Also randomise SRNet stage by stage from the head down (one more set of maps per stage
        and method); the verdict rests on the full randomisation either way.
    faithfulness_seed : int
        Seed of the random pixel orders and of the re-initialised weights.
    model : {'srnet', 'srnet-res', 'srnet-cs', 'defect-cnn'}
        Which of the run's learned methods to explain: an SRNet-family method (its crop networks see
        pixels, the median residual, or pixels through the constrained layer; the maps are over the
        crop either way), or defect-cnn (:mod:`.defect_cnn`: per-defect contributions and Grad-CAM
        maps of its patch network; only ``methods``, ``neighbourhood``, ``device``, ``num_threads``
        and ``progress`` apply).
    adversarial_crops : int
        Held-out crops per device (distinct test images of the first run, alternating their true
        classes, the crop networks taken in turn) perturbed until their crop network's class flips
        (:mod:`.adversarial`: where the perturbation's energy sits, on content edges or at the
        defects); 0 skips it.
    """

    methods: tuple = DEFAULT_METHODS
    neighbourhood: int = 2
    score_cam_batch: int = 64
    layer: str = "auto"
    device: str = "auto"
    num_threads: int | None = None
    sheet_images: int = 4
    progress: bool = True
    faithfulness_crops: int = 16
    faithfulness_steps: int = 8
    faithfulness_baseline: str = "blur"
    faithfulness_cascade: bool = False
    faithfulness_seed: int = 0
    model: str = "srnet"
    adversarial_crops: int = 16

    def __post_init__(self):
        if self.model not in EXPLAINED_MODELS:
            raise ValueError(f"model must be one of {', '.join(EXPLAINED_MODELS)} (the learned methods CAMs explain), "
                             f"got {self.model!r}")
        self.methods = tuple(dict.fromkeys(m.strip().lower() for m in self.methods))
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown saliency method(s) {unknown}: choose from {', '.join(ALL_METHODS)}")
        if int(self.neighbourhood) != self.neighbourhood or self.neighbourhood < 0:
            raise ValueError(f"neighbourhood must be an integer >= 0 (pixels), got {self.neighbourhood!r}")
        if self.layer not in ("auto", "layer12") and "cam" in self.methods:
            raise ValueError(f"CAM is defined only at layer12 (the input of global average pooling), not at "
                             f"{self.layer!r}: drop cam from the methods, or use --layer auto or layer12")
        if self.score_cam_batch < 1 or self.sheet_images < 0:
            raise ValueError(f"score_cam_batch must be >= 1 and sheet_images >= 0, got {self.score_cam_batch} "
                             f"and {self.sheet_images}")
        for name, low in (("faithfulness_crops", 0), ("faithfulness_steps", 2), ("adversarial_crops", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.faithfulness_baseline not in FAITHFULNESS_BASELINES:
            raise ValueError(f"faithfulness_baseline must be one of {', '.join(FAITHFULNESS_BASELINES)}, "
                             f"got {self.faithfulness_baseline!r}")

    def layer_for(self, method: str, patch: int) -> str:
        """The layer a method explains for crops of ``patch`` pixels (see ``layer``)."""
        if method == "cam":
            return "layer12"
        if self.layer != "auto":
            return self.layer
        return "layer12" if _srnet_side(patch, 4) >= AUTO_MIN_CELLS else "layer9"


def explain_run(run_dir: str | Path, out_dir: str | Path | None = None, config: SaliencyConfig | None = None) -> dict:
    """Saliency maps and figures for every device of a finished ``ml_age`` run with SRNet.

    Parameters
    ----------
    run_dir : path
        Output folder of ``python -m pipeline.ml_age --methods ...,srnet``.  Progress and the
        devices or images left out are logged (INFO).
    out_dir : path, optional
        Where to write (default ``run_dir / "saliency"``).
    config : SaliencyConfig, optional
        Methods, neighbourhood, device and display settings.

    Returns
    -------
    dict
        The content of ``saliency.json`` plus ``verdict_text`` and ``files`` (paths written).

    Raises
    ------
    FileNotFoundError
        ``run_dir`` is not an ``ml_age`` output folder, or holds no finished SRNet run.
    """
    config = config or SaliencyConfig()
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "saliency"
    folder = RunFolder(run_dir)
    if not folder.exists():
        raise FileNotFoundError(f"{run_dir} is not an ml_age output folder (no config.json); "
                                "give the --out folder of `python -m pipeline.ml_age --methods ...,srnet`")
    # whether SRNet ran is asked of the record as written first, so that a folder without SRNet
    # says so whatever its version; then RunFolder.record refuses another schema
    record = read_json(folder.config_path)
    model = config.model
    if model == "defect-cnn":
        if "defect-cnn" not in (record.get("learned") or {}):
            raise FileNotFoundError(f"{run_dir}: this run did not train defect-cnn (config.json records no "
                                    "configuration for it); run `python -m pipeline.ml_age --methods fg,defect-cnn` first")
        return explain_defect_cnn_run(run_dir, out, config, record, read_record(run_dir).manifest.image_root())
    recorded = record.get("srnet") if model == "srnet" else (record.get("learned") or {}).get(model)
    if recorded is None:
        shown = "SRNet" if model == "srnet" else model
        raise FileNotFoundError(f"{run_dir}: this run did not train {shown} (config.json records no configuration "
                                f"for it); run `python -m pipeline.ml_age --methods fg,nb,svm,{model}` first")
    # raises RunFolderSchemaError for a folder of another run-folder schema; image paths are shown
    # relative to the manifest's folder, as in the run's own outputs
    root = read_record(run_dir).manifest.image_root()
    srnet_config = SRNetConfig.from_dict(recorded)
    devices = {}
    for device in folder.learned_devices(model):
        found = srnet_runs(folder, device, srnet_config.crops, model)
        if found.runs:
            devices[device] = found
        else:
            reasons = "; ".join(found.skipped.values()) or "no checkpoints"
            logger.info(f"{device}: no finished {model} run ({reasons}); skipped")
    if not devices:
        raise FileNotFoundError(f"{run_dir}: no finished {model} run with checkpoints under "
                                f"{folder.learned_dir(model, '<device>', 0).parent.relative_to(folder.path)}/run_XX/; "
                                f"run (or resume) `python -m pipeline.ml_age --methods ...,{model}` with this --out")
    positions = DefectPositions(run_dir, record)
    files: list[Path] = []
    summary: dict[str, Any] = {}
    per_map_rows: list[dict] = []
    faithfulness_rows: list[dict] = []
    adversarial_rows: list[dict] = []
    for device, found in devices.items():
        logger.info(f"{device}: explaining SRNet runs {found.runs} with {', '.join(config.methods)}")
        result = _explain_device(folder, out, found, srnet_config, config, positions, root)
        summary[device] = result["summary"]
        per_map_rows += result["rows"]
        faithfulness_rows += result["faithfulness_rows"]
        adversarial_rows += result["adversarial_rows"]
        files += result["files"]
    report = {
        "tool": "pipeline.saliency",
        "created": utc_now(),
        "run": str(run_dir.resolve()),
        "run_manifest": record.get("manifest", {}),
        "settings": {**asdict(config), "target": "each crop network's predicted class",
                     "neighbourhood_px": config.neighbourhood,
                     "neighbourhood": f"pixels within Chebyshev distance {config.neighbourhood} of a defect "
                                      f"({2 * config.neighbourhood + 1}x{2 * config.neighbourhood + 1} box)",
                     "defect_source": positions.source,
                     "content_features": "cell medians of luma, of the squared gradient of the 3x3-median-filtered "
                                         "luma and of the chroma of the 3x3-median-filtered channels, at map "
                                         "resolution, on the cells touching no defect neighbourhood; figure: mean "
                                         "|Spearman| of each map with its own image's feature minus its mean "
                                         "|Spearman| with the other test images' feature",
                     "thresholds": {"defect_lift": DEFECT_LIFT, "significance": SIGNIFICANCE,
                                    "content_rho": CONTENT_RHO},
                     "faithfulness": faithfulness_settings(config),
                     "adversarial": adversarial_settings()},
        "srnet": srnet_config.to_dict(),
        "model": model,
        "versions": package_versions(),
        "command": command_line(),
        "devices": summary,
    }
    return write_report(out, report, per_map_rows, files, faithfulness_rows, adversarial_rows)


def _read_crops(device_name: str, images: list[str], srnet_config: SRNetConfig, config: SaliencyConfig):
    """The network inputs of every readable image: (crops per name, boxes, usable paths, failures)."""
    crops: dict[str, list[np.ndarray]] = {name: [] for name in srnet_config.crops}
    boxes, usable, failures = [], [], []
    for path in tqdm(images, desc=f"{device_name}: reading", unit="img", disable=not config.progress, leave=False):
        try:
            pixels = read_image(path).pixels
            extracted = extract_crops(pixels, srnet_config.patch, srnet_config.channels, srnet_config.crops,
                                      input=srnet_config.input)
        except (OSError, ValueError, TypeError) as exc:  # an unreadable image is recorded, the others go on
            failures.append({"image": path, "reason": str(exc)})
            logger.info(f"{device_name}: {path}: left out ({exc})")
            continue
        for name, crop in extracted.items():
            crops[name].append(crop)
        boxes.append(crop_geometry(pixels.shape, srnet_config))
        usable.append(path)
    return crops, boxes, usable, failures


def _saliency_maps(folder: RunFolder, found: DeviceRuns, stacked: dict[str, np.ndarray], layers: dict[str, str],
                   srnet_config: SRNetConfig, config: SaliencyConfig):
    """Every run's crop networks explain every image: (maps, targets, crop probabilities).

    ``maps[method]`` is (runs, images, crops, h, w), ``targets[method]`` (runs, images, crops)
    the explained class (the network's prediction, an output column), and ``crop_proba[run][crop]``
    the softmax of each crop network's logits, (images, classes).
    """
    from pipeline.srnet.cam import saliency_method
    from pipeline.srnet.runtime import resolve_device, torch_runtime
    from pipeline.srnet.train import load_crop_model

    device_name = found.device
    n_runs, n_crops = len(found.runs), len(srnet_config.crops)
    n_images = len(next(iter(stacked.values())))
    torch_device = resolve_device(config.device)
    maps: dict[str, np.ndarray] = {}
    targets = {m: np.zeros((n_runs, n_images, n_crops), np.int64) for m in config.methods}
    threads = config.num_threads or srnet_config.num_threads
    steps = tqdm(total=n_runs * n_crops * len(config.methods), desc=f"{device_name}: saliency", unit="map set",
                 disable=not config.progress, leave=False)
    crop_proba: dict[int, dict[str, np.ndarray]] = {}
    with torch_runtime(threads, torch_device, deterministic=False):
        for r, run in enumerate(found.runs):
            crop_proba[run] = {}
            for c, crop_name in enumerate(srnet_config.crops):
                model = load_crop_model(checkpoint_path(folder, device_name, run, crop_name, config.model),
                                        str(torch_device))
                for method in config.methods:
                    options = {"batch_size": config.score_cam_batch if method == "scorecam" else 32,
                               "target_layer": layers[method]}
                    result = saliency_method(method, model, **options)(stacked[crop_name])
                    if method not in maps:
                        maps[method] = np.zeros((n_runs, n_images, n_crops, *result.maps.shape[1:]), np.float32)
                    maps[method][r, :, c] = result.maps
                    targets[method][r, :, c] = result.targets
                    if crop_name not in crop_proba[run]:
                        logits = result.logits.astype(np.float64)
                        soft = np.exp(logits - logits.max(axis=1, keepdims=True))
                        crop_proba[run][crop_name] = soft / soft.sum(axis=1, keepdims=True)
                    steps.update(1)
    steps.close()
    return maps, targets, crop_proba


def _explain_device(folder: RunFolder, out: Path, found: DeviceRuns, srnet_config: SRNetConfig, config: SaliencyConfig,
                    positions: DefectPositions, root: Path | None = None) -> dict:
    """Maps, figures, per-map rows, the maps file and the contact sheet of one device (image paths in
    the rows, the failures and the maps file relative to ``root``, the manifest's folder, when inside it)."""
    from pipeline.srnet.fusion import fuse_probabilities

    device_name = found.device
    labels: dict[str, int] = {}
    for run in found.runs:
        labels.update(dict(found.test[run]))
    images = list(labels)  # union of the test images of every run, first-seen order
    crops, boxes, usable, failures = _read_crops(device_name, images, srnet_config, config)
    if not usable:
        raise FileNotFoundError(f"{device_name}: none of the {len(images)} test images could be read")
    stacked = {name: np.stack(arrays) for name, arrays in crops.items()}
    n_runs, n_images = len(found.runs), len(usable)
    held_out = np.array([[path in dict(found.test[run]) for path in usable] for run in found.runs])  # (runs, images)
    layers = {method: config.layer_for(method, srnet_config.patch) for method in config.methods}
    maps, targets, crop_proba = _saliency_maps(folder, found, stacked, layers, srnet_config, config)

    # accuracy of each run's fused prediction on its own test images (recomputed from the checkpoints)
    truth = np.array([labels[p] for p in usable])
    n_columns = next(iter(crop_proba[found.runs[0]].values())).shape[1]
    classes = found.classes if len(found.classes) == n_columns else sorted(set(truth.tolist()))
    if len(classes) != n_columns:
        raise ValueError(f"{device_name}: the networks have {n_columns} outputs but the labels are {classes}; "
                         "the run folder is inconsistent")
    accuracy = {}
    for r, run in enumerate(found.runs):
        fused = fuse_probabilities(crop_proba[run], srnet_config.fusion)
        predicted = fused.argmax(axis=1)
        mask = held_out[r]
        accuracy[run] = float(np.mean(predicted[mask] == _class_index(truth[mask], classes)))

    # structure features of every crop, at the maps' resolution (the same for every method)
    feature_cache: dict[tuple, dict[str, list]] = {}

    def features_at(shape: tuple[int, int]) -> dict[str, list[dict[str, np.ndarray]]]:
        if shape not in feature_cache:
            feature_cache[shape] = {crop_name: [structure_features(stacked[crop_name][i], shape)
                                                for i in range(n_images)] for crop_name in srnet_config.crops}
        return feature_cache[shape]

    chance = float(max(np.mean(truth[held_out[r]] == label) for r in range(n_runs) for label in classes))
    rows, method_summaries = [], {}
    for method in config.methods:
        map_shape = tuple(maps[method].shape[3:])
        features = features_at(map_shape)
        feature_names = list(features[srnet_config.crops[0]][0])
        content = ContentTally()
        # leave out of the null the shifts that keep a defect in its own map cell
        min_shift = -(-stacked[srnet_config.crops[0]].shape[2] // map_shape[0]) + config.neighbourhood
        tallies: dict[Any, DefectTally] = {"all": DefectTally(min_shift)}
        for r, run in enumerate(found.runs):
            members = np.flatnonzero(held_out[r])
            if members.size == 0:
                continue
            points_of = {i: positions.for_image(device_name, run, usable[i]) for i in members}
            for c, crop_name in enumerate(srnet_config.crops):
                group_maps = maps[method][r, members, c]
                own = {}
                crop_size = stacked[crop_name].shape[2:]
                local_points = [points_in_crop(points_of[i], boxes[i][crop_name]) for i in members]
                keep = np.stack([cells_away_from_defects(points, crop_size, config.neighbourhood, map_shape)
                                 for points in local_points])
                for name in feature_names:
                    values = np.stack([features[crop_name][i][name] for i in members])
                    own[name], other, other_abs = own_and_other_correlations(group_maps, values, keep)
                    content.add(name, own[name], other, other_abs, targets[method][r, members, c])
                for k, i in enumerate(members):
                    raw = group_maps[k]
                    points = local_points[k]
                    shares = defect_shares(raw, points, stacked[crop_name].shape[2:], config.neighbourhood)
                    target_label = int(classes[targets[method][r, i, c]])
                    if shares is not None:
                        tallies["all"].add(shares)
                        tallies.setdefault(target_label, DefectTally(min_shift)).add(shares)
                    rows.append({
                        "device": device_name, "run": run, "image": shown_path(usable[i], root), "crop": crop_name,
                        "method": method,
                        "true": int(truth[i]), "target": target_label,
                        **{f"rho_{name}": float(own[name][k]) for name in feature_names},
                        "defects_in_crop": len(points),
                        "defect_share": None if shares is None else shares["share"],
                        "area_share": None if shares is None else shares["area"],
                        "saliency_mass": float(np.maximum(raw, 0).sum()),
                    })
        content_summary = content.summary()
        defects = tallies.pop("all").summary()
        defects["by_target_class"] = {str(label): tally.summary() for label, tally in sorted(tallies.items())}
        method_summaries[method] = {
            "layer": layers[method],
            "map_shape": list(map_shape),
            "consistency": consistency(maps[method], targets[method], held_out),
            "content": content_summary,
            "defects": defects,
            "verdict": method_verdict(content_summary, defects),
        }
    # faithfulness of each method's maps, on a few held-out crops of the first run
    faithfulness, faithfulness_rows = check_faithfulness(folder, found, stacked, maps, targets, held_out, truth, usable,
                                                    layers, classes, srnet_config, config, root)
    for method, record in faithfulness.items():
        method_summaries[method]["faithfulness"] = record
        method_summaries[method]["verdict_used"] = record["faithful"] is not False
    # the device's verdict: the majority of the faithful methods whose maps can localise (more than
    # 4x4 cells) if there are any; ties go to the first of them; unfaithful methods do not vote
    verdict, voting = device_verdict(method_summaries)
    files = []
    if any(record.get("n_crops") for record in faithfulness.values()):
        figure = out / "faithfulness" / f"{device_name}.png"
        files += faithfulness_figure(figure, device_name, faithfulness, found.runs[0], config)
    # where a perturbation that flips the class must go, on a few held-out crops of the first run
    adversarial, adversarial_rows, adversarial_files = perturb_run(
        folder, found, stacked, held_out, truth, usable, boxes, positions, classes, srnet_config, config, out, root)
    files += adversarial_files
    npz_path = out / "maps" / f"{device_name}.npz"
    write_maps(npz_path, runs=found.runs, images=[shown_path(p, root) for p in usable], crops=srnet_config.crops,
               held_out=held_out, true=truth,
               maps={m: maps[m] for m in config.methods}, targets={m: targets[m] for m in config.methods})
    files.append(npz_path)
    if config.sheet_images:
        sheet = out / "sheets" / f"{device_name}.png"
        files += contact_sheet(sheet, device_name, usable, truth, stacked, maps, targets, held_out, boxes, positions,
                               found.runs, classes, srnet_config, config)
    summary = {
        "runs": found.runs,
        "runs_skipped": {str(k): v for k, v in found.skipped.items()},
        "n_test_images": int(held_out.sum()),
        "n_images": n_images,
        "failures": [{**f, "image": shown_path(f["image"], root)} for f in failures],
        "srnet_accuracy": {str(k): v for k, v in accuracy.items()},
        "chance_accuracy": chance,
        "verdict_methods": voting,
        "unfaithful_methods": [m for m, s in method_summaries.items() if not s["verdict_used"]],
        "defect_source": positions.source,
        "methods": method_summaries,
        "verdict": verdict,
        "adversarial": adversarial,
    }
    return {"summary": summary, "rows": rows, "faithfulness_rows": faithfulness_rows,
            "adversarial_rows": adversarial_rows, "files": files}


def _class_index(labels: np.ndarray, classes: list[int]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[int(v)] for v in labels])

