"""After training: score the selected and the last weights on the test split.

When a run holds out a validation split (``data.val_split > 0``), the best epoch is chosen on that split and
the test split is never looked at during training. This module then evaluates, once, the weights of the
selected epoch (``best.pt``) and of the last epoch on the test split, so the reported test accuracy is free
of selection bias. Without a validation split the validation set *is* the test set and nothing is added.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

from unikd.engine.config.inputs import dataset_kwargs
from unikd.engine.eval.bias_shift import DEFAULT_GRID, DEFAULT_GRID_TEXT, ShiftedLogits, search_on_loader
from unikd.engine.eval.class_metrics import test_values
from unikd.engine.eval.evaluate import evaluate
from unikd.engine.run.checkpoint import load_checkpoint
from unikd.engine.run.distributed import barrier
from unikd.engine.run.weights import load_weights

log = logging.getLogger("unikd")

METRICS = ("top1", "top5", "nll", "ece")


def wants_final_test(cfg: Any) -> bool:
    """True when the run selects its epoch on a held-out validation split and ``final_test`` is on."""
    return bool(cfg.final_test) and cfg.data.val_split > 0 and cfg.data.loader == "memory"


def build_test_loader(c: Any) -> tuple[Any, Any]:
    """The test split of the run's data (normalised with the training statistics) and its loader."""
    from unikd.data import InMemoryLoader, create_dataset
    from unikd.data.views import view_options

    cfg = c.cfg
    kwargs = dataset_kwargs(dataclasses.asdict(cfg.data), split="test", seed=cfg.seed)
    test_ds = create_dataset(cfg.data.name, **kwargs)
    # Normalise with the training statistics, exactly as validation does.
    test_ds.mean, test_ds.std = c.train_ds.mean, c.train_ds.std
    eval_bs = -(-cfg.data.eval_batch_size // c.info.world_size) * c.info.world_size
    loader = InMemoryLoader(
        test_ds,
        eval_bs,
        train=False,
        seed=cfg.seed,
        device=c.info.device,
        rank=c.info.rank,
        world_size=c.info.world_size,
        **view_options(dataclasses.asdict(cfg.data)),  # eval geometry (crop=rrc)
    )
    return loader, test_ds


def score(c: Any, model: Any, loader: Any) -> dict[str, float]:
    """:func:`~unikd.engine.eval.evaluate.evaluate` with the run's settings (all ranks take part)."""
    cfg = c.cfg
    return evaluate(
        model,
        loader,
        num_classes=c.num_classes,
        precision=cfg.precision,
        device=c.info.device,
        channels_last=cfg.channels_last,
        dist_info=c.info,
        class_groups=c.class_groups,
    )


def final_test(c: Any) -> dict[str, Any]:
    """``{"test_selected_top1": ..., "test_last_top1": ..., ...}`` for the components ``c`` of a run.

    ``selected`` is the epoch with the best validation top-1 (``best.pt``), ``last`` the final weights (the
    EMA when EMA is on, as for validation). Every rank scores its shard; the metrics are all-reduced.
    """
    loader, test_ds = build_test_loader(c)

    def score_model(model: Any) -> dict[str, float]:
        return score(c, model, loader)

    out: dict[str, Any] = {"test_count": len(test_ds)}
    last = score_model(c.eval_model)
    barrier(c.info)  # rank 0 wrote best.pt; every rank reads it
    selected_model = None
    if c.run_dir.best.exists():
        selected_model = copy.deepcopy(c.eval_model)
        load_weights(
            selected_model, load_checkpoint(c.run_dir.best)["model"], path=c.run_dir.best, what="checkpoint"
        )
        selected = score_model(selected_model)
    else:  # no epoch was evaluated (cannot happen with eval_every <= epochs)
        selected = {k: None for k in METRICS}
    for k in METRICS:
        out[f"test_selected_{k}"] = selected[k]
        out[f"test_last_{k}"] = last[k]
    out.update(test_values(selected, last, c.class_groups))
    if c.info.is_main:
        log.info(
            "test split (%d images): selected epoch %s top1=%.2f%%, last epoch top1=%.2f%%",
            len(test_ds),
            c.state.best_epoch,
            selected["top1"] if selected["top1"] is not None else float("nan"),
            last["top1"],
        )
    if c.class_groups and selected_model is not None:
        out.update(bias_fix(c, selected_model, loader))
    return out


def bias_fix(c: Any, model: Any, test_loader: Any) -> dict[str, Any]:
    """The bias-shift fix (:mod:`unikd.engine.eval.bias_shift`) of the selected weights of a run with dropped
    classes: ``b`` chosen on the validation split (the grid
    :data:`~unikd.engine.eval.bias_shift.DEFAULT_GRID`),
    then the test split scored once with it. Keys: ``bias_shift``, ``bias_shift_grid``,
    ``val_selected_biasfix_top1`` (validation top-1 with ``b``; at ``b = 0`` it is ``best_top1``) and
    ``test_selected_biasfix_top1{,_dropped,_kept}``."""
    cfg = c.cfg
    dropped = c.class_groups["dropped"]
    found = search_on_loader(
        model,
        c.val_loader,
        classes=dropped,
        grid=DEFAULT_GRID,
        precision=cfg.precision,
        device=c.info.device,
        channels_last=cfg.channels_last,
        dist_info=c.info,
    )
    shifted = score(c, ShiftedLogits(model, dropped, found.bias), test_loader)
    out: dict[str, Any] = {
        "bias_shift": found.bias,
        "bias_shift_grid": DEFAULT_GRID_TEXT,
        "val_selected_biasfix_top1": found.top1,
        "test_selected_biasfix_top1": shifted["top1"],
    }
    for g in c.class_groups:
        out[f"test_selected_biasfix_top1_{g}"] = shifted.get(f"top1_{g}")
    if c.info.is_main:
        log.info(
            "bias shift of the dropped classes %s: b=%g chosen on validation (top-1 %.2f%% -> %.2f%%); test "
            "top-1 with it %.2f%% (dropped %s, kept %s)",
            ", ".join(map(str, dropped)),
            found.bias,
            found.top1_unshifted,
            found.top1,
            shifted["top1"],
            _pct(shifted.get("top1_dropped")),
            _pct(shifted.get("top1_kept")),
        )
        if found.at_edge:
            log.warning(
                "the bias shift b=%g is the largest value of the grid %s: a longer grid may find a better "
                "one (unikd eval best.pt --bias-shift --bias-grid 0:40:0.25)",
                found.bias,
                DEFAULT_GRID_TEXT,
            )
    return out


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}%"
