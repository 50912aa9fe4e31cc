"""What a run keeps between steps, processes and restarts: checkpoints and safetensors files, weights
loading, the last checkpoint and its fallback, the run's identity, RNG state, trackers, write errors, and the
distributed and precision helpers. Nothing here reads the config."""
