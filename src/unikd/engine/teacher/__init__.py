"""The teacher of a run: the live, frozen model or its cached outputs (:mod:`.live`), and the registry of
pretrained teacher weights (:mod:`.pretrained`)."""
