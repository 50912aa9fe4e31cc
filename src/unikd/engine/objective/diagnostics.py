"""Per-term gradient diagnostics: what each loss term does to the student, measured every N steps.

With ``diagnostics.every = N > 0``, at every N-th optimiser step (before its backward) each term's weighted
contribution (``ce_weight * CE`` and ``weight_i * ramp_i * term_i``, what the optimiser actually receives)
is differentiated alone, with ``torch.autograd.grad`` on the step's graph, w.r.t.

- the student's logits (the batch's ``(N, C)`` tensor), and
- the parameters of the student's "last shared layer": the last layer (in execution order) that every
  term's gradient reaches, i.e. the classifier when every term reads the logits, else e.g. the last layer
  before a FitNet hint; ``diagnostics.layer`` sets it by module path.

Logged per epoch (means over the epoch's measurements, next to the term values, by every writer of the run
folder): ``train/<term>/grad_logits`` and ``train/<term>/grad_layer`` (L2 norms; ``<term>`` includes
``ce``) and ``train/<term>/cos_logits`` / ``train/<term>/cos_layer`` (cosine with the CE gradient). A
warning names the weight to change when a term's layer gradient stays above ``ratio`` times, or below
``1/ratio`` of, the CE's for ``patience`` measurements in a row (terms still ramping up are not judged).

The measurement adds no gradient to the step and changes no state the training reads, so a run with
diagnostics is bit-identical to one without (tests/engine/test_diagnostics.py). With DDP the numbers are
each rank's local-batch measurements averaged over ranks. In online training the student is measured.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor, nn

from unikd.engine.config import Config
from unikd.engine.run.distributed import DistInfo, all_reduce_sum

log = logging.getLogger("unikd")

# measured quantities per name, in storage order
FIELDS = ("grad_logits", "grad_layer", "cos_logits", "cos_layer")


def build_diagnostics(
    cfg: Config, info: DistInfo, model: nn.Module, objective: Any, sample: Tensor
) -> GradDiagnostics | None:
    """The diagnostics of a run, or None when ``diagnostics.every`` is 0 (then nothing is computed)."""
    if cfg.diagnostics.every <= 0:
        return None
    return GradDiagnostics(cfg, info, model, objective, sample)


def _param_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules that own parameters directly, by path."""
    return {n: m for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}


@torch.no_grad()
def execution_order(model: nn.Module, sample: Tensor) -> list[str]:
    """Paths of the parameter-owning modules in the order one eval-mode forward runs them."""
    order: list[str] = []
    handles = [
        m.register_forward_hook(lambda mod, inp, out, name=name: order.append(name))
        for name, m in _param_modules(model).items()
    ]
    was_training = model.training
    model.eval()
    try:
        model(sample)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return list(dict.fromkeys(order))


class GradDiagnostics:
    """Measures, accumulates per epoch, warns; its state is part of the checkpoint (exact resume)."""

    def __init__(self, cfg: Config, info: DistInfo, model: nn.Module, objective: Any, sample: Tensor) -> None:
        d = cfg.diagnostics
        self.every, self.ratio, self.patience = int(d.every), float(d.ratio), int(d.patience)
        self.info = info
        self.model = model
        self.terms_form = bool(cfg.loss.terms)
        self.names = ["ce", *(t.name for t in objective.specs)]
        self.order = execution_order(model, sample)
        modules = dict(model.named_modules())
        if d.layer is not None and d.layer not in modules:
            from unikd.registry import closest

            hint = closest(d.layer, [n for n in modules if n])
            raise ValueError(
                f"diagnostics.layer={d.layer!r} is not a module of {cfg.model}."
                + (f" Did you mean {hint!r}?" if hint else "")
                + " Give a module path (e.g. fc) or null to find the last shared layer automatically"
            )
        self.layer: str | None = d.layer
        self.sums = torch.zeros(len(self.names), len(FIELDS), dtype=torch.float64)
        self.counts = torch.zeros(len(self.names), len(FIELDS), dtype=torch.float64)
        self.streak: dict[str, int] = {}  # > 0: measurements in a row above ratio; < 0: below 1/ratio
        self.warned: dict[str, int] = {}  # the direction already warned about (+1 / -1)

    # ------------------------------------------------------------------------------------------ measure

    def due(self, step: int) -> bool:
        """Whether optimiser step ``step`` (1-based, counted over the run) is measured."""
        return step % self.every == 0

    def maybe_measure(
        self, step: int, logits: Tensor, terms: dict[str, Tensor], objective: Any, epoch_progress: float
    ) -> None:
        if self.due(step):
            self.measure(step, logits, terms, objective, epoch_progress)

    def _weighted(self, terms: dict[str, Tensor], objective: Any, progress: float) -> dict[str, Tensor]:
        out = {"ce": objective.ce_weight * terms["ce"]}
        for t in objective.specs:
            out[t.name] = (t.weight * t.ramp(progress)) * terms[t.name]
        return out

    def _params(self, name: str) -> list[nn.Parameter]:
        return [p for p in dict(self.model.named_modules())[name].parameters() if p.requires_grad]

    def _resolve_layer(self, logits: Tensor, weighted: dict[str, Tensor]) -> str:
        """The last parameter-owning module, in execution order, that every term's gradient reaches."""
        reads_logits = [
            v.requires_grad
            and torch.autograd.grad(v, logits, retain_graph=True, allow_unused=True)[0] is not None
            for v in weighted.values()
        ]
        from unikd.engine.objective.taps import _last_linear

        linear = _last_linear(self.model)
        if all(reads_logits) and linear is not None:
            return linear
        named = dict(self.model.named_parameters())
        reached: set[str] | None = None
        for v in weighted.values():
            if not v.requires_grad:
                continue
            grads = torch.autograd.grad(v, list(named.values()), retain_graph=True, allow_unused=True)
            hit = {n for n, g in zip(named, grads) if g is not None}
            reached = hit if reached is None else reached & hit
        owners = {n.rpartition(".")[0] for n in (reached or set())}
        shared = [m for m in self.order if m in owners]
        if not shared:
            raise ValueError(
                "diagnostics: the loss terms share no layer of the student; set "
                "diagnostics.layer=<module path>"
            )
        return shared[-1]

    def measure(
        self, step: int, logits: Tensor, terms: dict[str, Tensor], objective: Any, epoch_progress: float
    ) -> None:
        """Differentiate each weighted term alone and fold the norms and cosines into the epoch's sums."""
        weighted = self._weighted(terms, objective, epoch_progress)
        if self.layer is None:
            self.layer = self._resolve_layer(logits, weighted)
            if self.info.is_main:
                log.info("diagnostics: the last layer every loss term's gradient reaches is %r", self.layer)
        params = self._params(self.layer)
        flat: dict[str, tuple[Tensor | None, Tensor | None]] = {}
        for name, value in weighted.items():
            if not value.requires_grad:
                flat[name] = (None, None)
                continue
            grads = torch.autograd.grad(value, [logits, *params], retain_graph=True, allow_unused=True)
            g_logits = grads[0].flatten().double() if grads[0] is not None else None
            layer = [g.flatten() for g in grads[1:] if g is not None]
            flat[name] = (g_logits, torch.cat(layer).double() if layer else None)
        ce_logits, ce_layer = flat["ce"]
        row = torch.full((len(self.names), len(FIELDS)), math.nan, dtype=torch.float64)
        for i, name in enumerate(self.names):
            g_logits, g_layer = flat[name]
            row[i, 0] = 0.0 if g_logits is None else g_logits.norm()
            row[i, 1] = 0.0 if g_layer is None else g_layer.norm()
            if name != "ce":
                row[i, 2] = _cosine(g_logits, ce_logits)
                row[i, 3] = _cosine(g_layer, ce_layer)
        row = self._mean_over_ranks(row)
        finite = torch.isfinite(row)
        self.sums += torch.where(finite, row, torch.zeros_like(row))
        self.counts += finite.double()
        self._check(step, row, objective, epoch_progress)

    def _mean_over_ranks(self, row: Tensor) -> Tensor:
        if not self.info.distributed:
            return row
        finite = torch.isfinite(row)
        packed = torch.stack([torch.where(finite, row, torch.zeros_like(row)), finite.double()])
        packed = all_reduce_sum(packed.to(self.info.device), self.info).cpu()
        return torch.where(packed[1] > 0, packed[0] / packed[1].clamp(min=1), torch.full_like(row, math.nan))

    # ------------------------------------------------------------------------------------------ warn

    def _weight_key(self, name: str) -> str:
        return f"loss.terms.{name}.weight" if self.terms_form else "loss.weight"

    def _check(self, step: int, row: Tensor, objective: Any, progress: float) -> None:
        ce = float(row[0, 1])
        specs = {t.name: t for t in objective.specs}
        for i, name in enumerate(self.names[1:], start=1):
            g = float(row[i, 1])
            spec = specs[name]
            if spec.ramp(progress) < 1.0 or not (ce > 0 and math.isfinite(g)):
                self.streak[name] = 0  # still ramping up, or nothing to compare with
                continue
            r = g / ce
            side = 1 if r > self.ratio else -1 if r < 1.0 / self.ratio else 0
            before = self.streak.get(name, 0)
            self.streak[name] = before + side if side and (before * side) >= 0 else side
            if side == 0:
                self.warned.pop(name, None)
                continue
            if abs(self.streak[name]) >= self.patience and self.warned.get(name) != side:
                self.warned[name] = side
                if self.info.is_main:
                    log.warning("%s", self._message(name, r, side, spec.weight, step))

    def _message(self, name: str, r: float, side: int, weight: float, step: int) -> str:
        key = self._weight_key(name)
        where = f"at {self.layer!r}"
        if side > 0:
            what = f"{r:.3g}x the CE's: it dominates the update"
            fix = f"lower {key} (now {weight:g}; {weight / r:.3g} equalises them) or raise loss.ce_weight"
        else:
            what = f"{r:.3g}x the CE's (1/{1 / r:.3g}): it barely changes the update"
            fix = f"raise {key} (now {weight:g}; {weight / r:.3g} equalises them) or lower loss.ce_weight"
        return (
            f"diagnostics: term {name!r}: for {self.patience} measurements in a row (every {self.every} "
            f"steps, up to step {step}) its weighted gradient {where} was {what}. If that is not intended, "
            f"{fix}."
        )

    # ------------------------------------------------------------------------------------------ epochs

    def reset_epoch(self) -> None:
        self.sums.zero_()
        self.counts.zero_()

    def epoch_record(self) -> dict[str, float | None]:
        """``train/<term>/<field>``: the means over this epoch's measurements (None without any)."""
        out: dict[str, float | None] = {}
        means = self.sums / self.counts.clamp(min=1)
        for i, name in enumerate(self.names):
            for j, field in enumerate(FIELDS):
                if name == "ce" and field.startswith("cos"):
                    continue
                out[f"train/{name}/{field}"] = float(means[i, j]) if self.counts[i, j] > 0 else None
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "sums": self.sums.clone(),
            "counts": self.counts.clone(),
            "streak": dict(self.streak),
            "warned": dict(self.warned),
        }

    def load_state_dict(self, sd: dict[str, Any] | None) -> None:
        if not sd:  # a checkpoint written without diagnostics: start measuring from here
            return
        if tuple(sd["sums"].shape) == tuple(self.sums.shape):
            self.sums, self.counts = sd["sums"].clone(), sd["counts"].clone()
        self.layer = self.layer or sd.get("layer")
        self.streak = {k: int(v) for k, v in sd.get("streak", {}).items()}
        self.warned = {k: int(v) for k, v in sd.get("warned", {}).items()}


def _cosine(a: Tensor | None, b: Tensor | None) -> float:
    if a is None or b is None:
        return math.nan
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return math.nan
    return float((a @ b) / (na * nb))
