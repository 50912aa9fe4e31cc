"""Evaluation: top-1/top-5/NLL/ECE of a model on a loader (:mod:`.evaluate`), of a saved run
(:mod:`.saved`), per-class-group metrics and the bias-shift fix."""
