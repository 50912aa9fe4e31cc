"""The objective of a network: its terms (:mod:`.objective`), built from the config (:mod:`.build`) with
their context (:mod:`.context`), the feature taps they read (:mod:`.taps`), instance selection and the
per-term gradient diagnostics. What a term may ask for is the contract in :mod:`unikd.losses.contract`."""
