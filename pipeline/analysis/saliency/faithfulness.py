"""The faithfulness checks of a saliency analysis, run on one device's first SRNet-family run.

:func:`check_faithfulness` runs :mod:`pipeline.srnet.faithfulness` (deletion and insertion curves
against a random pixel order, and the model-randomisation sanity check) for every saliency
method on a few held-out crops, and returns the records that :mod:`.explain` stores per method
and the rows of ``saliency_faithfulness.csv``. torch is imported inside the function.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from pipeline.analysis.runfolder import RunFolder
from pipeline.analysis.saliency.inputs import DeviceRuns, checkpoint_path
from pipeline.analysis.saliency.stats import faithfulness_pairs, faithfulness_record
from pipeline.features.device import shown_path
from pipeline.logs import get_logger

if TYPE_CHECKING:
    from pipeline.analysis.saliency.explain import SaliencyConfig
    from pipeline.srnet.presets import SRNetConfig

__all__ = ["check_faithfulness"]

logger = get_logger(__name__)


def _not_tested(methods, note: str) -> dict[str, dict]:
    return {m: {"faithful": None, "label": f"not tested ({note})", "reasons": [], "n_crops": 0} for m in methods}


def check_faithfulness(folder: RunFolder, found: DeviceRuns, stacked: dict[str, np.ndarray], maps: dict[str, np.ndarray],
                  targets: dict[str, np.ndarray], held_out: np.ndarray, truth: np.ndarray, usable: list[str],
                  layers: dict[str, str], classes: list[int], srnet_config: SRNetConfig, config: SaliencyConfig,
                  root: Path | None) -> tuple[dict[str, dict], list[dict]]:
    """Deletion/insertion curves and the randomisation check of every method on a few held-out crops.

    The crops are the first run's test images (:func:`~.stats.faithfulness_pairs`).  The randomisation
    check takes the first ``faithfulness_crops`` of them.  Deletion and insertion take the first
    ``faithfulness_crops`` *informative* ones -- whose baseline lowers the probability of the
    explained class by at least :data:`pipeline.srnet.faithfulness.MIN_SPAN` (two forward passes
    per crop to find out); on the others every pixel order gives the same flat curve.

    Returns, per method, the record stored under ``faithfulness`` in ``saliency.json`` (the
    :class:`~pipeline.srnet.faithfulness.FaithfulnessVerdict`, mean AUCs and curves, the
    randomisation figures) and the rows of ``saliency_faithfulness.csv`` (one per method and crop).
    """
    if config.faithfulness_crops == 0:
        return _not_tested(config.methods, "faithfulness_crops = 0"), []
    from pipeline.srnet import faithfulness as fx
    from pipeline.srnet.runtime import resolve_device, torch_runtime
    from pipeline.srnet.train import load_crop_model

    device_name, run = found.device, found.runs[0]
    budget = config.faithfulness_crops
    pairs = faithfulness_pairs(held_out[0], truth, len(srnet_config.crops))
    if not pairs:
        return _not_tested(config.methods, f"run {run} holds no readable test image"), []
    first = config.methods[0]
    curves: dict[str, list] = {m: [] for m in config.methods}
    checks: dict[str, list] = {m: [] for m in config.methods}
    rows: dict[tuple[str, int, int], dict] = {}
    torch_device = resolve_device(config.device)
    informative: list[tuple[int, int]] = []
    scanned = 0
    span_of: dict[tuple[int, int], float] = {}
    with torch_runtime(config.num_threads or srnet_config.num_threads, torch_device, deterministic=False):
        models = {c: load_crop_model(checkpoint_path(folder, device_name, run, name, config.model),
                                          str(torch_device))
                  for c, name in enumerate(srnet_config.crops)}
        # the informative crops, in the pairs' order, scanned a batch at a time until the budget is met
        for start in range(0, len(pairs), budget):
            chunk = pairs[start : start + budget]
            for c in sorted({c for _, c in chunk}):
                images = [i for i, cc in chunk if cc == c]
                spans = fx.baseline_span(models[c], np.ascontiguousarray(stacked[srnet_config.crops[c]][images]),
                                      targets[first][0, images, c], baseline=config.faithfulness_baseline,
                                      batch_size=32)
                span_of.update({(i, c): float(v) for i, v in zip(images, spans)})
            scanned += len(chunk)
            informative += [pair for pair in chunk if span_of[pair] >= fx.MIN_SPAN]
            if len(informative) >= budget:
                break
        informative = informative[:budget]
        randomised = pairs[:budget]
        steps = tqdm(total=len(srnet_config.crops) * len(config.methods), desc=f"{device_name}: faithfulness",
                     unit="method", disable=not config.progress, leave=False)
        for c, crop_name in enumerate(srnet_config.crops):
            model = models[c]
            curve_images = [i for i, cc in informative if cc == c]
            check_images = [i for i, cc in randomised if cc == c]
            cascade = (tuple(s for s in (*fx.SRNET_CASCADE, "stem") if hasattr(model, s))
                       if config.faithfulness_cascade else None)
            shuffled = fx.randomised_copy(model, config.faithfulness_seed) if check_images else None
            reference = None
            for method in config.methods:
                if curve_images:
                    chosen = targets[method][0, curve_images, c]
                    same = reference is not None and np.array_equal(reference.targets, chosen)
                    result = fx.deletion_insertion(model, np.ascontiguousarray(stacked[crop_name][curve_images]),
                                                maps[method][0, curve_images, c], chosen,
                                                steps=config.faithfulness_steps, baseline=config.faithfulness_baseline,
                                                batch_size=32, seed=config.faithfulness_seed,
                                                reference=reference if same else None)
                    reference = reference or result
                    curves[method].append(result)
                    values = {"probability": result.deletion[:, 0], "baseline_probability": result.deletion[:, -1],
                              **{f"{kind}_{name}": getattr(result, f"{kind}_{name}") for kind in ("deletion", "insertion")
                                 for name in ("auc", "auc_random", "gain")}}
                    for k, i in enumerate(curve_images):
                        rows.setdefault((method, i, c), {}).update({n: float(v[k]) for n, v in values.items()})
                if check_images:
                    options = {"batch_size": config.score_cam_batch if method == "scorecam" else 32,
                               "target_layer": layers[method]}
                    check = fx.randomisation_check(method, model, np.ascontiguousarray(stacked[crop_name][check_images]),
                                                targets[method][0, check_images, c], cascade=cascade,
                                                seed=config.faithfulness_seed, method_options=options,
                                                randomised=shuffled)
                    checks[method].append(check)
                    for k, i in enumerate(check_images):
                        rows.setdefault((method, i, c), {})["randomisation_rho"] = float(check.rho[k])
                steps.update(1)
        steps.close()
    for (method, i, c), row in rows.items():
        row.update({"device": device_name, "run": run, "image": shown_path(usable[i], root),
                    "crop": srnet_config.crops[c], "method": method, "target": int(classes[targets[method][0, i, c]]),
                    "span": span_of.get((i, c))})
    records = {}
    spans = np.array([span_of[pair] for pair in pairs[:scanned]])
    for method in config.methods:
        verdict = fx.faithfulness_verdict(curves[method], checks[method])
        records[method] = faithfulness_record(verdict.to_dict(), curves[method], checks[method], run=run,
                                              n_scanned=scanned, n_informative=len(informative),
                                              n_randomised=len(randomised), spans=spans,
                                              n_crops=len(set(informative) | set(randomised)))
        logger.info(f"{device_name}: {method}: {verdict.label}"
                    + (f" ({'; '.join(verdict.reasons)})" if verdict.reasons else ""))
    position = {pair: k for k, pair in enumerate(pairs)}
    ordered = sorted(rows, key=lambda key: (config.methods.index(key[0]), position[key[1:]]))
    return records, [rows[key] for key in ordered]
