"""The training loop: build a run (:mod:`.setup`, :mod:`.build`), the one step over its networks
(:mod:`.step`), epochs and files (:mod:`.trainer`), resume, the run folder's claim and outputs, and the final
test."""
