"""Progress reporting for the engine; the implementation lives in :mod:`unikd._progress` so that the data
layer (archive decoding) can use it too without importing the engine."""

from unikd._progress import Progress, progress, progress_enabled, use_tqdm

__all__ = ["Progress", "progress", "progress_enabled", "use_tqdm"]
